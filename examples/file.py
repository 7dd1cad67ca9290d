"""Run a bundle over an audio file (wav, flac, ogg; any rate and channels) as fast as
possible, or paced like a live microphone with --realtime.

    python examples/file.py kitchen.wav --mode alert
    python examples/file.py kitchen.wav --realtime --bundle DIR
"""

from __future__ import annotations

import argparse

import soundflow


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path")
    ap.add_argument("--bundle", help="bundle directory (default: the embedded default)")
    ap.add_argument("--mode", help="task prompt, e.g. transcribe, alert, assist")
    ap.add_argument("--realtime", action="store_true", help="pace the file like a microphone")
    args = ap.parse_args()

    with soundflow.Listener(
        args.bundle, mode=args.mode, input=args.path, realtime=args.realtime
    ) as listener:
        for event in listener.events():
            if event.type == "response":
                print(f"{event.t:8.1f}s  {event.raw}")
            elif event.type == "summary":
                print(
                    f"{event.chunks} chunks in {event.wall_s:.2f} s "
                    f"({event.realtime_factor:.0f}x real time), decision latency "
                    f"p50 {event.decision_p50_ms:.1f} ms / p99 {event.decision_p99_ms:.1f} ms"
                )
                if event.error:
                    raise SystemExit(event.error)


if __name__ == "__main__":
    main()
