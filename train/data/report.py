"""`soundflow data inspect`: statistics of a shard directory and a timeline PNG of one stream
(spectrogram, event spans coloured by category, target responses as marks).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from soundflow.audio import CHUNK_MS
from soundflow.protocol import chunk_index

from .shards import iter_streams


def statistics(directory: str | Path) -> dict:
    """Totals over every stream, read one stream at a time (audio is not loaded)."""
    st: dict = {
        "streams": 0,
        "hours": 0.0,
        "events": 0,
        "words": 0,
        "addressed_words": 0,
        "by_category": Counter(),
        "by_label": Counter(),
        "by_scenario": Counter(),
        "targets": Counter(),
        "speakers": set(),
        "sources": Counter(),
    }
    chunks = alert_chunks = respond_chunks = 0
    for s in iter_streams(directory, load_audio=False):
        st["streams"] += 1
        st["hours"] += s["duration"] / 3600
        st["by_scenario"][s["scenario"]] += 1
        for e in s["events"]:
            st["events"] += 1
            st["by_category"][e["category"]] += 1
            st["by_label"][e["label"]] += 1
            st["sources"][e["source"].split(":")[0]] += 1
        for w in s["words"]:
            st["words"] += 1
            st["addressed_words"] += int(w["addressed"])
            st["speakers"].add(w["speaker"])
        n = int(s["duration"] * 1000 // CHUNK_MS)
        chunks += n
        for task, targets in s["targets"].items():
            st["targets"][task] += len(targets)
        due = {chunk_index(t["t"], CHUNK_MS) for ts in s["targets"].values() for t in ts}
        respond_chunks += len(due)
        alert_chunks += len({chunk_index(t["t"], CHUNK_MS) for t in s["targets"]["alert"]})
    st["chunks"] = chunks
    # Share of chunks where the alert task must respond: the class balance L_stream sees.
    st["alert_ratio"] = alert_chunks / max(1, chunks)
    st["respond_ratio"] = respond_chunks / max(1, chunks)
    st["speakers"] = len(st["speakers"])
    return st


def format_statistics(st: dict) -> str:
    lines = [
        f"streams {st['streams']}, {st['hours']:.3f} h, {st['chunks']} chunks of {CHUNK_MS} ms",
        f"events {st['events']}, words {st['words']} ({st['addressed_words']} addressed), speakers {st['speakers']}",
        "targets " + ", ".join(f"{k} {v}" for k, v in sorted(st["targets"].items())),
        f"alert ratio {st['alert_ratio']:.4f} of chunks; any-task respond ratio {st['respond_ratio']:.4f}",
        "events per category " + ", ".join(f"{k} {v}" for k, v in st["by_category"].most_common()),
        "scenarios " + ", ".join(f"{k} {v}" for k, v in st["by_scenario"].most_common()),
        "sources " + ", ".join(f"{k} {v}" for k, v in st["sources"].most_common()),
        "top labels " + ", ".join(f"{k} {v}" for k, v in st["by_label"].most_common(15)),
    ]
    return "\n".join(lines)


COLORS = {
    "Human": "tab:red",
    "Daily": "tab:orange",
    "Equipment": "tab:purple",
    "Traffic": "tab:brown",
    "Nature": "tab:green",
    "Music": "tab:pink",
    "Speech": "tab:blue",
}
TASK_Y = {"transcribe": 0.2, "alert": 0.5, "assist": 0.8}


def render_timeline(
    directory: str | Path, png: str | Path, stream_id: str | None = None, max_seconds: float = 120.0
) -> str:
    """Draw one stream (the first, or `stream_id`) up to max_seconds; returns its id."""
    import matplotlib

    matplotlib.use("Agg")  # no display on a build machine
    import matplotlib.pyplot as plt
    from scipy import signal

    stream = next((s for s in iter_streams(directory) if stream_id in (None, s["id"])), None)
    if stream is None:
        raise KeyError(f"no stream {stream_id!r} in {directory}")
    sr, x = stream["sample_rate"], stream["samples"]
    x = x[: int(max_seconds * sr)]
    end = len(x) / sr
    f, t, sxx = signal.spectrogram(x, sr, nperseg=512, noverlap=352)
    fig, (ax0, ax1, ax2) = plt.subplots(
        3, 1, figsize=(16, 8), sharex=True, height_ratios=[3, 1.2, 1.2]
    )
    ax0.pcolormesh(t, f / 1000, 10 * np.log10(sxx + 1e-12), shading="auto", cmap="magma")
    ax0.set_ylabel("kHz")
    ax0.set_title(
        f"{stream['id']}  {stream['scenario']}  ({stream['duration']:.1f} s, showing {end:.0f} s)"
    )
    for e in stream["events"]:
        if e["start"] > end:
            continue
        c = COLORS.get(e["category"], "gray")
        ax1.axvspan(e["start"], min(e["end"], end), 0.1, 0.9, color=c, alpha=0.5)
        name = e["label"] + (" (!)" if e["alert"] else "")
        ax1.text(e["start"], 0.5, name, fontsize=7, rotation=90, va="center")
    ax1.set_yticks([])
    ax1.set_ylabel("events")
    for task, targets in stream["targets"].items():
        for tg in targets:
            if tg["t"] <= end:
                y = TASK_Y[task]
                ax2.plot([tg["t"]], [y], "v", color="k" if task != "alert" else "tab:red", ms=5)
                if task != "transcribe":
                    ax2.text(tg["t"], y + 0.05, tg["text"][:48], fontsize=6, rotation=20)
    ax2.set_yticks(list(TASK_Y.values()), list(TASK_Y))
    ax2.set_ylim(0, 1.2)
    ax2.set_xlabel("stream seconds")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.5) for c in COLORS.values()]
    ax1.legend(handles, list(COLORS), loc="upper right", fontsize=6, ncol=7)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return stream["id"]
