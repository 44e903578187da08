"""SNOMED-CT label maps of the PhysioNet/CinC Challenge 2021 family, and their PTB-XL twins.

The Challenge 2021 datasets (CPSC2018, Chapman-Shaoxing, Ningbo, Georgia, ...) give diagnoses
as SNOMED-CT codes in a `# Dx:` header comment. A *task* is an ordered list of classes; each
class is switched on by one or more codes:

* `challenge`: the 26 classes scored by the Challenge 2021 (`dx_mapping_scored.csv`, 30 codes),
  with its four equivalences merged as the Challenge scores them: CLBBB 733534002 = LBBB
  164909002, CRBBB 713427006 = RBBB 59118001, SVPB 63593006 = PAC 284470004, VPB 17338001 = PVC
  427172004. Class names are the Challenge abbreviations.
* `cpsc`: the 9 classes of CPSC2018 (Normal, AF, I-AVB, LBBB, RBBB, PAC, PVC, STD, STE). In the
  Challenge copy of CPSC2018, 'Normal' is coded 426783006 (sinus rhythm, class `NSR` here) and
  PVC is coded 164884008 ('ventricular ectopics'); STD 429622005 and STE 164931005 are not
  scored by the Challenge but are CPSC2018 classes.

`PTBXL_EQUIVALENTS[task][class]` names the PTB-XL SCP statement (a label of PTB-XL's `all`
task) that describes the same finding, for cross-dataset transfer (probe trained on PTB-XL,
tested here). Classes without a counterpart are absent. Two entries are judgements rather than
identities and are marked below: CPSC2018's 'Normal' is a normal ECG (PTB-XL NORM), while the
Challenge's NSR is the rhythm (PTB-XL SR); 'T wave abnormal' is closest to PTB-XL's
non-specific T-wave changes (NT_).
"""

import types

# Challenge 2021 scored diagnoses: SNOMED code -> (abbreviation, description).
CHALLENGE_SCORED_CODES = types.MappingProxyType({
    "164889003": ("AF", "atrial fibrillation"),
    "164890007": ("AFL", "atrial flutter"),
    "6374002": ("BBB", "bundle branch block"),
    "426627000": ("Brady", "bradycardia"),
    "733534002": ("CLBBB", "complete left bundle branch block"),
    "713427006": ("CRBBB", "complete right bundle branch block"),
    "270492004": ("IAVB", "1st degree av block"),
    "713426002": ("IRBBB", "incomplete right bundle branch block"),
    "39732003": ("LAD", "left axis deviation"),
    "445118002": ("LAnFB", "left anterior fascicular block"),
    "164909002": ("LBBB", "left bundle branch block"),
    "251146004": ("LQRSV", "low qrs voltages"),
    "698252002": ("NSIVCB", "nonspecific intraventricular conduction disorder"),
    "426783006": ("NSR", "sinus rhythm"),
    "284470004": ("PAC", "premature atrial contraction"),
    "10370003": ("PR", "pacing rhythm"),
    "365413008": ("PRWP", "poor R wave progression"),
    "427172004": ("PVC", "premature ventricular contractions"),
    "164947007": ("LPR", "prolonged pr interval"),
    "111975006": ("LQT", "prolonged qt interval"),
    "164917005": ("QAb", "qwave abnormal"),
    "47665007": ("RAD", "right axis deviation"),
    "59118001": ("RBBB", "right bundle branch block"),
    "427393009": ("SA", "sinus arrhythmia"),
    "426177001": ("SB", "sinus bradycardia"),
    "427084000": ("STach", "sinus tachycardia"),
    "63593006": ("SVPB", "supraventricular premature beats"),
    "164934002": ("TAb", "t wave abnormal"),
    "59931005": ("TInv", "t wave inversion"),
    "17338001": ("VPB", "ventricular premature beats"),
})

# Codes the Challenge scores as one diagnosis: code -> the class it counts for.
CHALLENGE_EQUIVALENT_CODES = types.MappingProxyType({
    "733534002": "LBBB", "713427006": "RBBB", "63593006": "PAC", "17338001": "PVC",
})

# Further codes used by the class maps (not scored by the Challenge 2021).
OTHER_CODES = types.MappingProxyType({
    "429622005": ("STD", "st depression"),
    "164931005": ("STE", "st elevation"),
    "164884008": ("VEB", "ventricular ectopics"),
})


def _challenge_classes() -> dict:
  classes = {}
  for code, (abbreviation, _) in CHALLENGE_SCORED_CODES.items():
    name = CHALLENGE_EQUIVALENT_CODES.get(code, abbreviation)
    classes.setdefault(name, []).append(code)
  return {name: tuple(sorted(codes)) for name, codes in sorted(classes.items())}


# task -> {class name: SNOMED codes that switch it on}; class order = label vector order.
TASKS = types.MappingProxyType({
    "challenge": types.MappingProxyType(_challenge_classes()),
    "cpsc": types.MappingProxyType({
        "NSR": ("426783006",),                           # CPSC2018 'Normal'
        "AF": ("164889003",),
        "IAVB": ("270492004",),
        "LBBB": ("164909002", "733534002"),
        "RBBB": ("59118001", "713427006"),
        "PAC": ("284470004", "63593006"),
        "PVC": ("164884008", "427172004", "17338001"),   # CPSC2018 codes PVC as 164884008
        "STD": ("429622005",),
        "STE": ("164931005",),
    }),
})

# task -> {class: PTB-XL SCP code (a label of PTB-XL's `all` task)}.
PTBXL_EQUIVALENTS = types.MappingProxyType({
    "challenge": types.MappingProxyType({
        "AF": "AFIB", "AFL": "AFLT", "IAVB": "1AVB", "IRBBB": "IRBBB", "LAnFB": "LAFB",
        "LBBB": "CLBBB", "LPR": "LPR", "LQRSV": "LVOLT", "LQT": "LNGQT", "NSIVCB": "IVCD",
        "NSR": "SR", "PAC": "PAC", "PR": "PACE", "PVC": "PVC", "QAb": "QWAVE",
        "RBBB": "CRBBB", "SA": "SARRH", "SB": "SBRAD", "STach": "STACH",
        "TAb": "NT_",    # judgement: closest PTB-XL statement
        "TInv": "INVT",
    }),
    "cpsc": types.MappingProxyType({
        "NSR": "NORM",   # judgement: CPSC2018's 'Normal' class is a normal ECG
        "AF": "AFIB", "IAVB": "1AVB", "LBBB": "CLBBB", "RBBB": "CRBBB", "PAC": "PAC",
        "PVC": "PVC", "STD": "STD_", "STE": "STE_",
    }),
})


def label_names(tasks) -> dict:
  """task -> ordered class names, for `info.metadata['label_names']`."""
  return {task: list(TASKS[task]) for task in tasks}


def code_description(code: str) -> str:
  """'AF (atrial fibrillation)' for a known code, else the code itself."""
  entry = CHALLENGE_SCORED_CODES.get(code) or OTHER_CODES.get(code)
  return f"{entry[0]} ({entry[1]})" if entry else code
