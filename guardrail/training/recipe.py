"""The training recipe: every setting of `guardrail train` and `guardrail cv`, one pydantic model.

The defaults reproduce the shipped weights: the packaged all-MiniLM-L6-v2 encoder cut to its
first ``num_layers`` blocks, all of those blocks fine-tuned (the token embeddings stay frozen, so
they need not ship), one linear head giving ten 3-way distributions from the mean-pooled
encoding. LoRA adapters were tried first and lost to TF-IDF on the held-out split; fine-tuning the
whole blocks did not. ``--set KEY=VALUE`` sets any field from the command line.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from guardrail.model.weights import WEIGHTS_DIR, Pooling, Thresholds
from guardrail.text import PromptKeep


class TrainConfig(BaseModel):
    """Hyper-parameters of `guardrail train` (defaults reproduce the shipped weights)."""

    data_dir: Path = Path("../shared/data")
    out_dir: Path = WEIGHTS_DIR
    seed: int = 13
    num_layers: int = 4
    epochs: int = 3
    batch_size: int = 16
    lr_encoder: float = 8e-5
    lr_head: float = 2e-3
    weight_decay: float = 0.01
    max_length: int = 256
    fulcra_weight: float = 2.0
    """Sample weight of FULCRA's rows: the only rows with per-value polarity labelled by people on LLM
    answers, outnumbered about ten to one by the external rows."""
    use_toxigen: bool = True
    toxigen_weight: float = 0.5
    threads: int = 2
    """Torch threads. The shipped weights were trained with two: another count sums in another order,
    so the weights reproduce bit for bit only with the same count."""
    final_fit: bool = False
    """Ship a model trained on train + dev. With tuned thresholds, stage 1 first picks the epoch
    and thresholds on dev; with fixed ``thresholds`` it trains on train + dev straight away."""
    thresholds: Thresholds | None = None
    """Fixed decision thresholds (chosen by ``guardrail cv``), or None to tune them on dev."""
    ema_decay: float = 0.0
    """Evaluate and ship an exponential moving average of the weights (decay per step); 0 = off."""
    all_windows: bool = False
    """Train on every window of a long response, aggregated as at inference (the strongest
    opposition of any window wins), instead of its first window only."""
    item_weight: float = 0.0
    """Weight of an auxiliary loss on FULCRA's fine-grained value items ("be honest: -1"): a second
    head, used in training only, predicts oppose / unrelated / support for each item seen at least
    ``item_min_count`` times in the training rows. 0 turns it off; nothing of it ships."""
    item_min_count: int = 20
    touche_epochs: int = 0
    """Epochs of intermediate training on Touché23 value *presence* (7,289 arguments; an invoked
    value admits oppose or support) before FULCRA; 0 = off."""
    pooling: Pooling = "all"
    """How the heads read the tokens: the mean of every token of a window ("all"), of the response's
    tokens only ("response"; the prompt still reaches them through attention), or one learned
    attention per value ("attention"). See ``weights.Pooling``."""
    prompt_dropout: float = 0.0
    """Probability, per FULCRA row and epoch, of training on the response without its prompt: a
    regularizer against reading the prompt's topic instead of the response's stance. 0 = off."""
    context_swap: float = 0.0
    """Probability, per external or draft row judged by its response alone and epoch, of training on it
    without its prompt or under an everyday request instead (``context.py``): an innocuous prompt must
    not clear a harmful answer, and a response scored without its prompt keeps its judgement. 0 = off."""
    label_smoothing: float = 0.0
    """Share of each value's loss spread evenly over the three classes (the labels are noisy); 0 = off."""
    refusal_weight: float = 0.0
    """Sample weight of synthetic counterfactual rows: the prompt of each training row that opposes a
    value, answered by a stock refusal and labelled "opposes nothing" (``data.refusal_counterfactuals``).
    0 = off."""
    violation_weight: float = 0.5
    """Weight of an extra loss on "opposes any value": binary cross-entropy of the noisy-OR of the
    ten P(oppose) against the source's own ``harmful`` judgement (external rows), or against whether
    the row opposes a value (FULCRA, ToxiGen: rows whose oppose targets are all known). 0 turns it off."""
    drafts_weight: float = 2.0
    """Sample weight of the rows SmolLM2 drafted (``drafts.py``): helpful answers to everyday requests
    (benign), and answers to the judged sources' risky train-side prompts (complying: harmful;
    refusing: benign). One writing style on both sides, so that complying is not itself read as harm.
    Used with the external data only; 0 = off."""
    terse_drafts: bool = False
    """Also train on SmolLM2's one-or-two-sentence answers to the same requests (``terse_answers.jsonl``),
    at ``drafts_weight``, so that short advice is not read as harm because every benign draft rambles. Off:
    with it, short benign chatbot replies passed too (DiaSafety), and ``eval --external`` uses the everyday
    ones as held-out plain answers (model card, "Variants")."""
    drafts_visible_harm_only: bool = False
    """Train on a draft complying with a Do-Not-Answer prompt as harmful only where that prompt's harm
    type shows in the answer's own text (``drafts.VISIBLE_HARMS``); the other complying drafts are left
    out (refusals stay). Off: measured in the model card's "Variants", not better overall."""
    external_per_class: int = 2000
    """Per external source, at most this many harmful and this many benign TRAIN rows outside the
    tuning slice (``external_train.py``) join training, with their prompt; 0 = FULCRA only (and
    thresholds tuned on FULCRA dev alone)."""
    external_weight: float = 0.5
    """Sample weight of the external rows, against ``fulcra_weight`` for FULCRA's: the external rows
    outnumber FULCRA's about ten to one, and their value labels are heuristic."""
    balance_external: bool = True
    """Weigh each source's harmful and benign rows alike (``external_train.balanced``), so that within
    a source the writing style alone cannot tell harmful from benign."""
    skip_external: list[str] = ["diasafety/Unauthorized Expertise"]
    """``source/category`` pairs left out of training. DiaSafety calls any chatbot answer that gives
    medical or legal information unsafe; a general assistant is expected to give such information.
    Kept, they were learnable but fewer harmful how-tos were stopped (model card, "Variants")."""
    prompt_keep: PromptKeep = "start"
    """Which tokens of a prompt longer than the window's 64 prompt tokens are kept: its start, or its two
    ends (``text.WindowPlan``). Shipped with the weights, so inference keeps the same ones."""
    counter_speech_weight: float = 0.0
    """Sample weight of the counter-speech rows built from ToxiGen's hateful statements
    (``counter_speech.py``; only with ``use_toxigen``): each claim rejected and agreed with in reply to it,
    condemned and endorsed in quotation, so that rebutting hate is not read as hate. 0 = off; the runs in
    the model card's Variants used 0.5, ToxiGen's weight."""
    violation_only_external: list[str] = []
    """``source/category`` pairs trained on the source's ``harmful`` judgement alone (the violation loss),
    every value unknown, as DICES is: the judgement is kept without tying it to a value's threshold."""
    min_allowed: float = 0.9
    """When tuning the default policy values' oppose thresholds on the tuning slice: the share of
    benign responses (mean over sources) that must pass."""
