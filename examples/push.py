"""Feed soundflow audio your application already owns (a ROS audio topic, your own capture
loop, a network stream) with `PushSource`: push blocks from any thread, events come out.

    python examples/push.py                        # a generated 48 kHz stereo stream
    python examples/push.py --input kitchen.wav    # a file, pushed in 20 ms blocks

A ROS 2 callback is one line: `source.push(bytes(msg.data))` with
`PushSource(sample_rate=msg_rate, channels=msg_channels, dtype="int16")`.
"""

from __future__ import annotations

import argparse
import signal
import threading
import time

import numpy as np

import soundflow
from soundflow.runtime.push import PushSource


def capture_thread(source: PushSource, args, stop: threading.Event) -> None:
    """Stands in for the application's own audio callback: 20 ms blocks in real time."""
    if args.input:
        import soundfile as sf

        audio, rate = sf.read(args.input, dtype="float32", always_2d=True)
    else:
        rate = 48_000
        t = np.arange(int(args.seconds * rate)) / rate
        tone = 0.3 * np.sin(2 * np.pi * 880 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0.6)
        audio = np.stack([tone, tone], 1).astype(np.float32)
    block = rate // 50
    for i in range(0, len(audio), block):
        if stop.is_set():
            break
        source.push(audio[i : i + block], sample_rate=rate)  # never blocks
        time.sleep(block / rate)
    source.end()  # no more audio: the listener finishes and sends its Summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", help="bundle directory (default: the embedded default)")
    ap.add_argument("--input", help="audio file to push instead of a generated stream")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the generated stream")
    args = ap.parse_args()

    # 10 s of buffer: if the listener falls further behind, the oldest audio is dropped
    # and counted in Summary.overruns; push() itself never waits.
    source = PushSource(buffer_s=10.0)
    stop = threading.Event()

    def on_event(event) -> None:  # runs on soundflow's respond thread: return quickly
        if event.type == "response":
            print(f"{event.t:6.1f}s  {event.alert or event.intent or ''}  {event.text}")
        elif event.type in ("error", "warning"):
            print(f"{event.t:6.1f}s  {event.type}: {event.text}")

    with soundflow.Listener(args.bundle, mode="alert", input=source, on_event=on_event) as lst:
        signal.signal(signal.SIGTERM, lambda *_: lst.stop())  # systemd / docker stop
        feeder = threading.Thread(target=capture_thread, args=(source, args, stop), daemon=True)
        feeder.start()
        try:
            summary = lst.wait()
        except KeyboardInterrupt:
            summary = lst.close()
        stop.set()
    print(
        f"heard {summary.t:.1f} s in {summary.chunks} chunks: {summary.responses} responses, "
        f"{summary.overruns} overruns, {summary.input_gaps} input gaps, error {summary.error}"
    )


if __name__ == "__main__":
    main()
