"""Listen to a microphone and print every response as it happens.

    pip install soundflow[mic]
    python examples/microphone.py --mode alert            # default input device
    python examples/microphone.py --device 2 --bundle DIR  # a device from `soundflow devices`

Ctrl-C stops capturing; the audio already captured is still decided and reported.
"""

from __future__ import annotations

import argparse
import sys

try:
    import sounddevice  # noqa: F401  (only to fail early with a hint)
except (ImportError, OSError):
    sys.exit(
        "this example needs a microphone library: pip install soundflow[mic] "
        "(and PortAudio: apt install libportaudio2)"
    )

import soundflow


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", help="bundle directory (default: the embedded default)")
    ap.add_argument("--device", help="input device index or name")
    ap.add_argument("--mode", help="task prompt, e.g. transcribe, alert, assist")
    args = ap.parse_args()
    device = int(args.device) if args.device and args.device.isdigit() else args.device

    listener = soundflow.Listener(args.bundle, mode=args.mode, device=device)
    print(f"listening in mode {listener.mode!r}; Ctrl-C to stop", file=sys.stderr)
    listener.start()
    try:
        for event in listener.events():
            if event.type == "response":
                tag = f"[{event.alert or event.intent}] " if event.tags else ""
                print(f"{event.t:8.1f}s  {tag}{event.text}  ({event.latency_ms:.0f} ms)")
    except KeyboardInterrupt:
        pass
    summary = listener.close()
    print(
        f"{summary.chunks} chunks, {summary.overruns} overruns, decision latency "
        f"p50 {summary.decision_p50_ms:.1f} ms",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
