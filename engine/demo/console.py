"""The live console summary the demo prints every few seconds."""

from __future__ import annotations

from engine.demo.session import DemoSession


def streaming(session: DemoSession) -> list[str]:
    """Devices whose heart rate a viewer of the class currently sees as live."""
    out = []
    for rider in session.riders:
        seen = session.monitor.riders.get(rider.spec.device)
        hr = seen.metrics.get("hr") if seen is not None else None
        if hr is not None and hr.state == "live":
            out.append(rider.spec.device)
    return out


def hr_now(session: DemoSession, device: str) -> tuple[int | None, str]:
    """The rider's heart rate as a viewer sees it now, in bpm (None unless live), and its state
    (`live`, `stale`, `no_contact`, ...; `none` before any value)."""
    seen = session.monitor.riders.get(device)
    hr = seen.metrics.get("hr") if seen is not None else None
    if hr is None:
        return None, "none"
    if hr.state == "live" and hr.last_value is not None:
        return round(hr.last_value), "live"
    return None, hr.state or "none"


def _hr_text(session: DemoSession, device: str) -> str:
    bpm, state = hr_now(session, device)
    if bpm is not None:
        return str(bpm)
    return "--" if state == "none" else state.replace("_", " ")


def summary_line(session: DemoSession) -> str:
    live = streaming(session)
    hrs = " ".join(f"{r.spec.name}:{_hr_text(session, r.spec.device)}" for r in session.riders)
    reconnects = sum(r.reconnects for r in session.riders)
    return (
        f"[{session.elapsed_s():6.1f}s] {len(live)}/{len(session.riders)} riders streaming | HR {hrs} "
        f"| reconnects {reconnects}"
    )


def summary_json(session: DemoSession) -> dict[str, object]:
    live = streaming(session)
    return {
        "event": "summary",
        "elapsed_s": round(session.elapsed_s(), 1),
        "streaming": len(live),
        "riders": len(session.riders),
        # Numbers (bpm, null when not live); why a value is missing is in hr_state.
        "hr": {r.spec.device: hr_now(session, r.spec.device)[0] for r in session.riders},
        "hr_state": {r.spec.device: hr_now(session, r.spec.device)[1] for r in session.riders},
        "reconnects": sum(r.reconnects for r in session.riders),
    }
