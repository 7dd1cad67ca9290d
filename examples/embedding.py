"""Embed soundflow in an application: react to alerts from a callback while the app's
own loop keeps running (a robot's control loop, an IoT hub's event bus...).

    python examples/embedding.py                      # default microphone
    python examples/embedding.py --input kitchen.wav  # or any file, paced like a mic
"""

from __future__ import annotations

import argparse
import queue
import time

import soundflow
from soundflow.runtime.events import Response


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", help="bundle directory (default: the embedded default)")
    ap.add_argument("--input", help="audio file instead of the microphone")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long to run")
    args = ap.parse_args()

    alerts: queue.Queue[Response] = queue.Queue()

    def on_event(event) -> None:
        # Runs on soundflow's respond thread: hand work to the app, return quickly.
        if event.type == "response" and event.alert:
            alerts.put(event)

    listener = soundflow.Listener(
        args.bundle, mode="alert", input=args.input, on_event=on_event, refractory_s=10.0
    )
    with listener:
        end = time.monotonic() + args.seconds
        while time.monotonic() < end and listener.summary is None:
            try:
                alert = alerts.get(timeout=0.1)
            except queue.Empty:
                continue  # the app's own work goes here
            print(
                f"ALERT {alert.alert} at {alert.t:.1f}s: {alert.text} "
                f"(heard {alert.latency_ms:.0f} ms after the sound)"
            )
    summary = listener.summary
    print(f"listened to {summary.t:.1f} s of audio; {summary.responses} responses")


if __name__ == "__main__":
    main()
