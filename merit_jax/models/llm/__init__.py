"""Decoder LLM backend for report generation: GGUF loading, Gemma 3 in Flax, tokenizer, decoding.

`gguf_loader` (needs the `gguf` package) is imported on use: `from merit_jax.models.llm import
gguf_loader`.
"""

from merit_jax.models.llm.gemma3 import Gemma3
from merit_jax.models.llm.gemma3 import Gemma3Config
from merit_jax.models.llm.gemma3 import init_cache
from merit_jax.models.llm.gemma3 import load_pretrained
from merit_jax.models.llm.gemma3 import params_from_gguf
from merit_jax.models.llm.gemma3 import tiny_config
from merit_jax.models.llm.gemma_tokenizer import GgufTokenizer
