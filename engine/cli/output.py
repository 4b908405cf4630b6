"""What commands print: JSON lines (one object per line, flushed, so pipes and `jq` see readings as they
happen) and, without `--json`, readable lines for the same objects (`human`): never a Python dict's repr.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO


def emit(obj: dict[str, Any], stream: TextIO | None = None) -> None:
    out = stream if stream is not None else sys.stdout
    out.write(json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n")
    out.flush()


def say(text: str, stream: TextIO | None = None) -> None:
    out = stream if stream is not None else sys.stdout
    out.write(text + "\n")
    out.flush()


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, str):
        return v
    return json.dumps(v, separators=(",", ":"), allow_nan=False, default=str)


def _clock(t: Any) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t)) if isinstance(t, int | float) else "--:--:--"


def _count(n: Any, what: str) -> str:
    return f"{n:,} {what}" + ("" if n == 1 else "s") if isinstance(n, int) else f"? {what}s"


def _device(obj: dict[str, Any]) -> str:
    """What a BLE bike's `streaming` state says it is: " (FTMS: Wahoo KICKR, firmware 4.2)"."""
    info = obj.get("device_info")
    if not isinstance(info, dict):
        return ""
    name = " ".join(str(info[k]) for k in ("manufacturer", "model") if info.get(k))
    firmware = f"firmware {info['firmware']}" if info.get("firmware") else ""
    what = ", ".join(part for part in (name, firmware) if part) or "no device information"
    return f" ({str(obj.get('service', '?')).upper()}: {what})"


def _reading(obj: dict[str, Any]) -> str:
    kind = obj.get("kind")
    head = f"{_clock(obj.get('t'))} {obj.get('source', '?')}"
    if kind == "state":
        detail = obj.get("detail")
        return f"{head} {obj.get('state')}" + (f": {detail}" if detail else "") + _device(obj)
    if kind == "summary":
        return f"{_count(obj.get('sources'), 'source')}, stopped after {_value(obj.get('elapsed_s'))} s"
    value, unit = obj.get("value"), obj.get("unit") or ""
    text = f"{head} {str(kind).replace('_', ' ')} {'--' if value is None else _value(value)}"
    text += f" {unit}" if unit else ""
    extras = []
    if obj.get("pct") is not None:
        extras.append(f"{_value(obj['pct'])}%")
    if obj.get("contact") not in (None, "detected", "unsupported"):
        extras.append(f"contact {str(obj['contact']).replace('_', ' ')}")
    return text + (f" ({', '.join(extras)})" if extras else "")


def _event(obj: dict[str, Any]) -> str:
    event = obj.get("event")
    ride = f"[{obj.get('ride_id', '?')}]"
    if event == "sync":
        return f"{ride} {obj.get('state')}: {obj.get('reason')}"
    if event == "ride":
        if obj.get("ended"):
            what = "already ended here; syncing it"
        elif obj.get("resumed"):
            what = f"resuming on {obj.get('device')} at sample {_value(obj.get('next_seq'))}"
        else:
            what = f"recording on {obj.get('device')}"
        recovery = obj.get("recovery") if isinstance(obj.get("recovery"), dict) else {}
        replayed = recovery.get("raw_replayed") if recovery else 0
        problems = recovery.get("problems") if recovery else []
        if replayed:
            what += f"; {_count(replayed, 'raw sample')} recovered from the last run"
        if problems:
            what += f"; recovery problems: {'; '.join(str(p) for p in problems)}"
        return f"{ride} {what}"
    if event == "ride_ended":
        return f"{ride} ended after {_count(obj.get('samples'), 'sample')}"
    if event == "end_posted":
        if obj.get("ok"):
            tries = _count(obj.get("attempts"), "attempt")
            return f"{ride} end posted to the backend (HTTP {obj.get('status')}, {tries})"
        return f"{ride} end not posted: {obj.get('error') or 'HTTP ' + str(obj.get('status'))}"
    if event == "listening":
        text = f"listening on {obj.get('url')}"
        if obj.get("dashboard_url"):
            text += f"; dashboard {obj['dashboard_url']}"
        return text
    if event == "summary" and isinstance(obj.get("hr"), dict):
        hrs = " ".join(f"{dev}:{'--' if bpm is None else bpm}" for dev, bpm in obj["hr"].items())
        return (
            f"[{_value(obj.get('elapsed_s'))}s] {obj.get('streaming')}/{obj.get('riders')} riders streaming "
            f"| HR {hrs} | reconnects {obj.get('reconnects')}"
        )
    rest = ", ".join(f"{k}={_value(v)}" for k, v in obj.items() if k != "event")
    return f"{event}: {rest}" if event is not None else rest


def human(obj: dict[str, Any]) -> str:
    """One readable line for any object a command emits: sensor readings and states, ride and app events
    (sync, ride, ride_ended, end_posted), `listening`, the demo's summary; anything else as key=value."""
    if "event" not in obj and "kind" in obj:
        return _reading(obj)
    return _event(obj)


def ride_summary_text(summary: dict[str, Any]) -> str:
    """The last line of `ridesync ride` and `ridesync app` without --json: where the ride stands."""
    ride = summary.get("ride_id", "?")
    parts = [f"ride {ride}: {summary.get('sync_state')}"]
    if summary.get("sync_reason"):
        parts[0] += f": {summary['sync_reason']}"
    parts.append(f"phase {summary.get('phase')}")
    samples = summary.get("samples")
    if isinstance(samples, dict) and samples:
        parts.append("samples " + ", ".join(f"{dev} {_value(n)}" for dev, n in samples.items()))
    totals = summary.get("totals")
    if isinstance(totals, dict):
        figures = []
        if totals.get("duration_s") is not None:
            figures.append(f"{_value(round(float(totals['duration_s'])))} s")
        if totals.get("avg_hr") is not None:
            figures.append(f"avg HR {round(float(totals['avg_hr']))}")
        if totals.get("max_hr") is not None:
            figures.append(f"max HR {totals['max_hr']}")
        if totals.get("output_kj") is not None:
            figures.append(f"{_value(totals['output_kj'])} kJ")
        if figures:
            parts.append(", ".join(figures))
    if summary.get("end_events_counted") is not None:
        parts.append(f"end events counted {summary['end_events_counted']}")
    end_post = summary.get("end_post")
    if isinstance(end_post, dict) and not end_post.get("ok", True):
        parts.append(f"end not posted: {end_post.get('error')}")
    if summary.get("aborted"):
        parts.append("aborted")
    return "; ".join(parts)
