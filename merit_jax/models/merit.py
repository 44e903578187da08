"""MERIT: one ECG encoder shared by a masked-reconstruction branch and an ECG-text branch.

Forward pass: the ECG is patchified per lead; a per-sample random permutation keeps
round((1 - mask_ratio) * N) of the N tokens (static shapes): any tokens
(`mask_strategy='random'`), or every lead of round((1 - mask_ratio) * slots) time slots
(`'time'`). The encoder sees the kept tokens; the decoder predicts all patches from the kept
encodings plus mask tokens. The contrastive branch uses either the pooled visible-token
encoding (`contrastive_view='masked'`, FLIP-style) or a second, unmasked pass (`'full'`),
projected linearly to `proj_dim` and L2-normalised; the text tower's pooled output is
projected and normalised the same way.

API:
  build_model(config) -> MERIT, from the config schema in docs/ARCHITECTURE.md
    (model.size [+ width/depth/heads/mlp_dim overrides], patch_size, stem, stem_channels,
    num_leads, mask_ratio, mask_strategy, decoder, text, proj_dim, temperature_init, dtype, remat;
    data.preprocess.num_samples).
  MERIT.__call__(ecg (B, leads, S), tokens (B, L), rng, *, reconstruction=True,
    contrastive=True, contrastive_view='masked') -> dict with
      'pred' (B, N, patch) predictions for every patch token (zeros if not reconstruction),
      'target' (B, N, patch) raw patch values, 'mask' (B, N) float 1 = masked (hidden),
      'ecg_proj' (B, proj_dim), 'text_proj' (B, proj_dim) (only if contrastive),
      'logit_scale' () = log(1 / temperature), already clipped.
  MERIT.embed_ecg(ecg, leads=None, return_tokens=False) -> {'pooled', 'projected'[, 'tokens']}:
    unmasked pass; `leads` is a static tuple of lead indices; ecg may hold all leads (they get
    selected) or only those; `tokens` (B, len(leads) * patches, D) are the encoder's final
    token features (lead-major order), e.g. for an LLM prefix.
  MERIT.embed_text(tokens) -> {'pooled', 'projected'}.
  Called with `method=MERIT.embed_ecg` etc. through `model.apply`.
  With a frozen pretrained text tower (`model.text.frozen`, models/text_tower.py) the module
  holds no text encoder: `text_encoder` is None and wherever `tokens` appear above, MERIT takes
  the tower's pooled embeddings (B, tower dim) instead; only `text_projection` is learned.
  A Gemma 3 tower with `model.text.tune_blocks` keeps its last blocks here
  (`models/gemma_text_head.py`): `text_encoder` is that head and the text input is the frozen
  trunk's packed states (B, max_len, d_model + 1).
  dummy_text_input(config, batch=1) -> the text input of that shape, for init and tracing.
"""


from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from merit_jax import config_validation
from merit_jax import objective
from merit_jax.models import ecg_vit
from merit_jax.models import text as text_lib
from merit_jax.models import text_tower

# Temperature is clipped to [1/100, 1] as in CLIP: logit_scale in [0, log 100].
MAX_LOGIT_SCALE = float(np.log(100.0))
CONTRASTIVE_VIEWS = config_validation.CONTRASTIVE_VIEWS
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def random_masking(rng: jax.Array, batch: int, num_tokens: int, num_keep: int):
  """Per-sample random permutation; keeps its first `num_keep` tokens.

  Returns:
    ids_keep (B, num_keep) token indices kept, ids_restore (B, N) inverse permutation,
    mask (B, N) float32 with 1 at masked (hidden) tokens.
  """
  return _keep_lowest_noise(jax.random.uniform(rng, (batch, num_tokens)), num_keep)


def _keep_lowest_noise(noise: jax.Array, num_keep: int):
  """(ids_keep, ids_restore, mask) keeping each row's `num_keep` tokens of lowest noise; a
  stable sort, so tokens of equal noise keep their order."""
  ids_shuffle = jnp.argsort(noise, axis=1, stable=True)
  ids_restore = jnp.argsort(ids_shuffle, axis=1)
  ids_keep = ids_shuffle[:, :num_keep]
  mask = (ids_restore >= num_keep).astype(jnp.float32)
  return ids_keep, ids_restore, mask


def time_masking(rng: jax.Array, batch: int, num_leads: int, num_patches: int,
                 num_keep_slots: int):
  """Per-sample random permutation of time slots; keeps every lead of its first
  `num_keep_slots` slots. Hiding a slot in every lead at once means a masked patch cannot be
  read off the same instant of other leads (limb leads are linear combinations of two of
  them), so reconstruction has to come from the signal's course in time.

  Tokens are in `ecg_vit.patchify` order (lead-major: token l * num_patches + t).
  Returns ids_keep (B, num_leads * num_keep_slots), ids_restore (B, N), mask (B, N) as
  `random_masking` does.
  """
  slot_noise = jax.random.uniform(rng, (batch, num_patches))
  # Every token of a slot shares its slot's noise, so the kept tokens are whole slots.
  return _keep_lowest_noise(jnp.tile(slot_noise, (1, num_leads)), num_leads * num_keep_slots)


def num_kept_tokens(num_tokens: int, mask_ratio: float) -> int:
  return max(1, int(round((1.0 - mask_ratio) * num_tokens)))


class MERIT(nn.Module):
  """ECG encoder + MAE decoder + text tower + projections + learnable temperature."""
  encoder: ecg_vit.ECGEncoder
  decoder: ecg_vit.ECGDecoder
  text_encoder: Optional[nn.Module]  # None: text inputs are a frozen tower's embeddings.
  num_leads: int = 12
  num_samples: int = 1000
  patch_size: int = 50
  mask_ratio: float = 0.75
  mask_strategy: str = "random"  # config_validation.MASK_STRATEGIES
  proj_dim: int = 256
  temperature_init: float = 0.07

  @property
  def num_patches(self) -> int:
    return self.num_samples // self.patch_size

  def setup(self):
    self.ecg_projection = nn.Dense(
        self.proj_dim, use_bias=False,
        kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(),
                                                 ("embed", "proj")))
    self.text_projection = nn.Dense(
        self.proj_dim, use_bias=False,
        kernel_init=nn.with_logical_partitioning(nn.initializers.xavier_uniform(),
                                                 ("embed", "proj")))
    self.logit_scale = self.param(
        "logit_scale", nn.with_logical_partitioning(
            nn.initializers.constant(np.log(1.0 / self.temperature_init)), ()), ())

  def _project(self, projection, pooled):
    return objective.l2_normalize(projection(pooled.astype(jnp.float32)))

  def _check_ecg(self, ecg, num_leads):
    if ecg.ndim != 3 or ecg.shape[1] != num_leads or ecg.shape[2] != self.num_samples:
      raise ValueError(f"MERIT: expected ecg of shape (batch, {num_leads}, {self.num_samples}),"
                       f" got {ecg.shape}")

  def _encode_all(self, ecg, leads: Optional[Sequence[int]] = None):
    lead_ids, time_ids = ecg_vit.token_ids(self.num_leads, self.num_patches, leads)
    return self.encoder(ecg_vit.patchify(ecg, self.patch_size), lead_ids, time_ids)

  def _text_pooled(self, text):
    if self.text_encoder is None:
      if text.ndim != 2 or not jnp.issubdtype(text.dtype, jnp.floating):
        raise ValueError("MERIT with a frozen text tower takes its pooled embeddings "
                         f"(batch, dim) float, got {text.shape} {text.dtype}")
      return text
    return self.text_encoder(text)["pooled"]

  def clipped_logit_scale(self):
    return jnp.clip(self.logit_scale, 0.0, MAX_LOGIT_SCALE)

  def __call__(self, ecg: jax.Array, tokens: jax.Array, rng: jax.Array, *,
               reconstruction: bool = True, contrastive: bool = True,
               contrastive_view: str = "masked") -> dict[str, jax.Array]:
    if contrastive_view not in CONTRASTIVE_VIEWS:
      raise ValueError(f"MERIT: contrastive_view must be one of {CONTRASTIVE_VIEWS}, "
                       f"got {contrastive_view!r}")
    self._check_ecg(ecg, self.num_leads)
    b = ecg.shape[0]
    patches = ecg_vit.patchify(ecg, self.patch_size)
    n = patches.shape[1]
    lead_ids, time_ids = ecg_vit.token_ids(self.num_leads, self.num_patches)
    out = {"target": patches, "logit_scale": self.clipped_logit_scale()}

    need_masked_pass = reconstruction or (contrastive and contrastive_view == "masked")
    if need_masked_pass:
      if self.mask_strategy == "time":
        ids_keep, ids_restore, mask = time_masking(
            rng, b, self.num_leads, self.num_patches,
            num_kept_tokens(self.num_patches, self.mask_ratio))
      else:
        ids_keep, ids_restore, mask = random_masking(
            rng, b, n, num_kept_tokens(n, self.mask_ratio))
      visible = jnp.take_along_axis(patches, ids_keep[..., None], axis=1)
      encoded = self.encoder(visible, jnp.asarray(lead_ids)[ids_keep],
                             jnp.asarray(time_ids)[ids_keep])
      out["mask"] = mask
    else:
      out["mask"] = jnp.zeros((b, n), jnp.float32)
    if reconstruction:
      out["pred"] = self.decoder(encoded["tokens"], ids_restore, lead_ids, time_ids)
    else:
      out["pred"] = jnp.zeros(patches.shape, jnp.float32)
    if contrastive:
      if contrastive_view == "masked":
        ecg_pooled = encoded["pooled"]
      else:
        ecg_pooled = self.encoder(patches, lead_ids, time_ids)["pooled"]
      out["ecg_proj"] = self._project(self.ecg_projection, ecg_pooled)
      out["text_proj"] = self._project(self.text_projection, self._text_pooled(tokens))
    return out

  def embed_ecg(self, ecg: jax.Array, leads: Optional[Sequence[int]] = None,
                return_tokens: bool = False) -> dict[str, jax.Array]:
    if leads is not None:
      leads = tuple(int(i) for i in leads)
      if not leads or min(leads) < 0 or max(leads) >= self.num_leads:
        raise ValueError(f"MERIT.embed_ecg: lead indices {leads} outside 0..{self.num_leads-1}")
      if ecg.ndim == 3 and ecg.shape[1] == self.num_leads and len(leads) != self.num_leads:
        ecg = ecg[:, np.asarray(leads)]
      self._check_ecg(ecg, len(leads))
    else:
      self._check_ecg(ecg, self.num_leads)
    encoded = self._encode_all(ecg, leads)
    pooled = encoded["pooled"]
    out = {"pooled": pooled, "projected": self._project(self.ecg_projection, pooled)}
    if return_tokens:
      out["tokens"] = encoded["tokens"]  # (B, leads * patches, D) after the final LayerNorm.
    return out

  def embed_text(self, tokens: jax.Array) -> dict[str, jax.Array]:
    pooled = self._text_pooled(tokens)
    return {"pooled": pooled, "projected": self._project(self.text_projection, pooled)}


def encoder_shape(model_config) -> tuple[int, int, int, int]:
  """(width, depth, heads, MLP width) of the ECG encoder of `config.model`: each None key is
  the size preset's (`ecg_vit.SIZES`), the MLP 4 × width."""
  m = model_config
  width, depth, heads = ecg_vit.SIZES[m.size]
  width = width if m.width is None else m.width
  depth = depth if m.depth is None else m.depth
  heads = heads if m.heads is None else m.heads
  return width, depth, heads, 4 * width if m.mlp_dim is None else m.mlp_dim


def build_model(config) -> MERIT:
  """Builds MERIT from the full config (needs `model` and `data.preprocess.num_samples`).

  Every key is read as configs/pretrain.py defines it; config_validation.validate_config
  checks the values (this only refuses what cannot be built at all).
  """
  m = config.model
  if m.size not in ecg_vit.SIZES:
    raise ValueError(f"config.model.size={m.size!r} must be one of {sorted(ecg_vit.SIZES)}")
  width, depth, heads, mlp_dim = encoder_shape(m)
  if m.dtype not in DTYPES:
    raise ValueError(f"config.model.dtype={m.dtype!r} must be one of {sorted(DTYPES)}")
  dtype = DTYPES[m.dtype]
  remat = bool(m.remat)
  num_samples = int(config.data.preprocess.num_samples)
  patch = int(m.patch_size)
  if patch <= 0 or num_samples % patch:
    raise ValueError(f"config.model.patch_size={patch} must divide "
                     f"config.data.preprocess.num_samples={num_samples}")
  num_leads = int(m.num_leads)
  num_patches = num_samples // patch
  if width % heads:
    raise ValueError(f"config.model: width {width} not divisible by heads {heads}")

  encoder = ecg_vit.ECGEncoder(width=width, depth=depth, num_heads=heads, mlp_dim=mlp_dim,
                               num_leads=num_leads, max_patches=num_patches, dtype=dtype,
                               remat=remat, stem=str(m.stem),
                               stem_channels=int(m.stem_channels))
  d = m.decoder
  decoder = ecg_vit.ECGDecoder(patch_size=patch, width=d.width, depth=d.depth,
                               num_heads=d.heads, num_leads=num_leads,
                               max_patches=num_patches, dtype=dtype, remat=remat)
  t = m.text
  if text_tower.is_frozen(t) and text_tower.tune_blocks(t):
    from merit_jax.models import gemma_text_head  # pylint: disable=g-import-not-at-top
    # Trunk states come from the cache; the last blocks train here.
    text_encoder = gemma_text_head.build_head(t, m.dtype)
  elif text_tower.is_frozen(t):
    text_encoder = None  # Its embeddings come from the cache (data/text_cache.py).
  elif t.kind == "transformer":
    if not t.vocab_size:
      raise ValueError("config.model.text.vocab_size must be set for kind='transformer' "
                       "(the tokenizer's vocab_size)")
    text_encoder = text_lib.TextTransformer(int(t.vocab_size), t.width, t.depth, t.heads,
                                            int(t.max_len), dtype=dtype, remat=remat)
  elif t.kind == "hf_bert":
    if not t.hf_dir:
      raise ValueError("config.model.text.hf_dir must name a local Hugging Face folder for "
                       "kind='hf_bert'")
    bert_config = text_lib.read_hf_bert_config(t.hf_dir)
    text_encoder = text_lib.BertEncoder(bert_config, dtype=dtype, remat=remat,
                                        pooling=t.pooling)
  else:
    raise ValueError(f"config.model.text.kind={t.kind!r} must be 'transformer' or 'hf_bert' "
                     "(or 'gemma3' with model.text.frozen=True)")
  return MERIT(encoder=encoder, decoder=decoder, text_encoder=text_encoder,
               num_leads=num_leads, num_samples=num_samples, patch_size=patch,
               mask_ratio=float(m.mask_ratio), mask_strategy=str(m.mask_strategy),
               proj_dim=int(m.proj_dim),
               temperature_init=float(m.temperature_init))


def dummy_text_input(config, batch: int = 1) -> jax.Array:
  """A text input of the right kind for init / tracing: token ids, or frozen-tower outputs."""
  if text_tower.is_frozen(config.model.text):
    return jnp.zeros((batch,) + text_tower.row_shape(config.model.text), jnp.float32)
  return jnp.ones((batch, int(config.model.text.max_len)), jnp.int32)
