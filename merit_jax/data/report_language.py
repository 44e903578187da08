"""The language of a PTB-XL report: German, English or Swedish, by marker words.

PTB-XL's reports come from several devices and sites: most are German (machine statements
such as "sinusrhythmus lagetyp normal"), some English ("sinus rhythm. normal ecg."), a few
Swedish ("sinusrytm vänster el-axel"); the text was upper-cased once, so umlauts
arrive as "Ä", "Ö". Zero-shot prompts are in one language, so a model can score a record by
its report language rather than its ECG; grouping test records by language shows whether it
does. A report is given the language with the most marker words; none (or a tie): 'unknown';
empty: 'none'.
"""

from __future__ import annotations

import re

LANGUAGES = ("de", "en", "sv")
UNKNOWN = "unknown"
NO_REPORT = "none"

# Frequent words of each language's reports that the other two do not use (medical Latin
# shared by all three, such as "inferior" or "qrs", is left out on purpose).
_MARKERS = {
    "de": frozenset("""sinusrhythmus lagetyp linkstyp rechtstyp steiltyp normales abnorm
        abnormal abnormes unspezifisches unspezifischer unspezifische verdacht auf möglich
        vorhofflimmern flattern vorhofflattern schenkelblock linksschenkelblock
        rechtsschenkelblock unvollständiger ableitungen niederspannung periphere extrasystole
        ventrikuläre supraventrikuläre linkshypertrophie hemiblock überdrehter ueberdrehter
        unbestätigter bericht und mit der die des bei nicht inferiorer inferioren myokardschaden
        sinustachykardie sinusbradykardie vorderwand hinterwand schrittmacher
        linksanteriorer linksposteriorer erregungsrückbildungsstörung arrhythmie sonst typ
        indiff veraenderungen veränderungen negativ flach flaches leitungsstoerung
        leitungsstörung grenzbefund biphasisch spitze hoch sinusbrsadykardie wahrscheinlich
        schlechte grades neg hebung kompl lsb rsb path pathologisches seitenlagetyp
        repolarisation""".split()),
    "en": frozenset("""sinus rhythm ecg the is are of and with left right axis
        deviation bundle branch wave waves segments segment depressed elevated possible
        probably otherwise borderline abnormal abnormality infarct old trace only requested
        atrial fibrillation flutter ventricular premature contraction contractions
        hypertrophy voltage voltages suggesting findings may be due to low flat inverted
        fascicular prolonged interval there no""".split()),
    "sv": frozenset("""sinusrytm vänster höger kammarhypertrofi kammare förmak förmaks
        ospecifik ospecifikt ospecifika avvikande förlopp misstänkt misstänkta och ej ålder
        bestämbar bestämmbar svårbestämbar svårbestämmbar axel el-axel infarkt-förändringar
        skänkelblock grenblock förmaksflimmer förmaksfladder extraslag normalt regelbunden
        rytm inga inget funna säkert patologiskt sinusbradykardi sinustakykardi för kan med
        slag sänkning förändring höjning såsom vid som inte fanns på arytmi bör övervägas
        låga amplituder extremitetsavledningarna myokardaffektion myokardskada
        ischemiförändringar sinustachykardi""".split()),
}
# "normal", "ekg", "qrs", "st", "infarkt", digits: shared or language-free, so not markers.
_WORD = re.compile(r"[^\W\d_]+")


def report_language(text: str | None) -> str:
  """'de' | 'en' | 'sv' by marker-word count; 'unknown' without a clear winner; 'none' when
  the report is empty."""
  if text is None or not str(text).strip():
    return NO_REPORT
  words = _WORD.findall(str(text).casefold())
  counts = {lang: sum(w in markers for w in words) for lang, markers in _MARKERS.items()}
  best = max(counts.values())
  winners = [lang for lang, n in counts.items() if n == best]
  return winners[0] if best > 0 and len(winners) == 1 else UNKNOWN
