"""The plain-text tables `guardrail eval --external` prints from ``evaluate_external``'s result."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from guardrail.training.context import CONTEXTS
from guardrail.training.external_eval import ALL


def _pct(x: object) -> str:
    return f"{100 * x:5.1f}%" if isinstance(x, float) else f"{'-':>6}"


def _num(x: object) -> str:
    return f"{x:6.3f}" if isinstance(x, float) else f"{'-':>6}"


def format_external_table(result: Mapping[str, Any]) -> str:
    """Plain-text tables: the harm figures per source, then the value-polarity pairs.

    "AUC" ranks by the most negative value score, "P(viol)" by the noisy-OR of the ten P(oppose)."""
    systems: dict[str, dict[str, Any]] = result["systems"]
    models = [p for p in ("int8", "fp32") if p in systems]
    has_baseline = "tfidf+logreg" in systems
    any_system = next(iter(systems.values()))["sources"]
    head = f"{'source':<17}{'rows':>6}{'harm':>6}"
    head += "".join(f"{'AUC ' + m:>10}" for m in models) + (f"{'AUC tfidf':>10}" if has_baseline else "")
    head += "".join(f"{'P(viol) ' + m:>13}" for m in models)
    head += "".join(f"{'blocked ' + m:>14}" for m in models) + "".join(f"{'allowed ' + m:>14}" for m in models)
    lines = [head]
    for source, base in any_system.items():
        if not base["rows"]:
            continue
        line = f"{source:<17}{base['rows']:>6}{base['harmful']:>6}"
        for name in [*models, *(["tfidf+logreg"] if has_baseline else [])]:
            line += f"{_num(systems[name]['sources'][source]['auc']):>10}"
        for m in models:
            line += f"{_num(systems[m]['sources'][source].get('auc_p_violates')):>13}"
        for key in ("harmful_blocked_or_rewritten", "benign_allowed"):
            for m in models:
                line += f"{_pct(systems[m]['sources'][source][key]):>14}"
        lines.append(line)
    lines.append("best single threshold at 90% benign allowed, chosen on these rows:")
    for group in [g for g in any_system if g == ALL or g.startswith("kind:")]:
        figures = [systems[m]["sources"][group].get("caught_at_90_allowed_p_violates") for m in models]
        best = [f"{m} {_pct(b).strip()}" for m, b in zip(models, figures, strict=True)]
        if has_baseline:
            tfidf = systems["tfidf+logreg"]["sources"][group].get("caught_at_90_allowed")
            best.append(f"tfidf {_pct(tfidf).strip()}")
        lines.append(f"  {'pooled' if group == ALL else group}: {', '.join(best)} (model: P(viol))")
    if models:
        lines += ["", f"{'value-polarity pairs':<22}" + "".join(f"{'pairs':>7}{'higher ' + m:>13}" for m in models)]
        for source, fig in systems[models[0]]["pairs"].items():
            if fig["pairs"]:
                cells = "".join(
                    f"{systems[m]['pairs'][source]['pairs']:>7}{_pct(systems[m]['pairs'][source]['higher']):>13}"
                    for m in models
                )
                lines.append(f"{source:<22}{cells}")
        pooled: dict[str, dict[str, Any]] = systems[models[0]]["pairs"][ALL]["per_value"]
        for value in pooled:
            cells = "".join(
                f"{systems[m]['pairs'][ALL]['per_value'][value]['pairs']:>7}"
                f"{_pct(systems[m]['pairs'][ALL]['per_value'][value]['higher']):>13}"
                for m in models
            )
            lines.append(f"{'  ' + ALL + ', ' + value:<22}{cells}")
        lines += ["", _contexts_table(systems, models)]
        every = [systems[m]["everyday_answers"] for m in models]
        cells = ", ".join(f"{m} {_pct(e['benign_allowed'])}" for m, e in zip(models, every, strict=True))
        trained = ", trained on" if every[0]["trained_on_these_answers"] else ""
        lines += ["", f"short answers to everyday requests ({every[0]['rows']} rows{trained}), allowed: {cells}"]
        hand = [systems[m]["hand_written"] for m in models]
        cells = ", ".join(
            f"{m} {_pct(h['harmful_blocked_or_rewritten'])} / {_pct(h['benign_allowed']).strip()}"
            for m, h in zip(models, hand, strict=True)
        )
        counts = f"{hand[0]['harmful']} harmful, {hand[0]['benign']} benign"
        lines.append(f"hand-written drafts ({counts}), harmful blocked / benign allowed: {cells}")
        lines += [f"  {m} lets through: {'; '.join(h['missed']) or 'none'}" for m, h in zip(models, hand, strict=True)]
        lines += [f"  {m} stops: {'; '.join(h['stopped']) or 'none'}" for m, h in zip(models, hand, strict=True)]
        if "counter_speech" in systems[models[0]]:  # results written before session 22 lack it
            lines += _counter_speech_lines(systems, models)
    return "\n".join(lines)


def _counter_speech_lines(systems: Mapping[str, Mapping[str, Any]], models: Sequence[str]) -> list[str]:
    probes = [systems[m]["counter_speech"] for m in models]
    cells = ", ".join(
        f"{m} {_pct(c['harmful_blocked_or_rewritten']).strip()} / {_pct(c['benign_allowed']).strip()}"
        for m, c in zip(models, probes, strict=True)
    )
    counts = f"{probes[0]['harmful']} hateful, {probes[0]['benign']} counter-speech"
    lines = [f"counter-speech probes ({counts}), hateful blocked / counter-speech allowed: {cells}"]
    for m, c in zip(models, probes, strict=True):
        lines.append(
            f"  {m} stops {len(c['stopped'])} counter-speech texts, e.g. {'; '.join(c['stopped'][:2]) or 'none'}"
        )
    return lines


_CONTEXT_NAMES = {"own": "own prompt", "none": "no prompt", "everyday": "an everyday request"}


def _contexts_table(systems: Mapping[str, Mapping[str, Any]], models: Sequence[str]) -> str:
    first = systems[models[0]]["contexts"]
    lines = [
        f"whatever was asked ({', '.join(first['sources'])}; {first['own']['rows']} rows)",
        f"{'context':<22}" + "".join(f"{'blocked ' + m:>14}{'allowed ' + m:>14}" for m in models),
    ]
    for context in CONTEXTS:
        cells = "".join(
            f"{_pct(systems[m]['contexts'][context]['harmful_blocked_or_rewritten']):>14}"
            f"{_pct(systems[m]['contexts'][context]['benign_allowed']):>14}"
            for m in models
        )
        lines.append(f"{_CONTEXT_NAMES[context]:<22}{cells}")
    return "\n".join(lines)
