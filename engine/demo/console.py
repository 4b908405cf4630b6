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


def _hr_text(session: DemoSession, device: str) -> str:
    seen = session.monitor.riders.get(device)
    hr = seen.metrics.get("hr") if seen is not None else None
    if hr is None:
        return "--"
    if hr.state == "live" and hr.last_value is not None:
        return str(round(hr.last_value))
    return hr.state.replace("_", " ") or "--"


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
        "hr": {r.spec.device: _hr_text(session, r.spec.device) for r in session.riders},
        "reconnects": sum(r.reconnects for r in session.riders),
    }
