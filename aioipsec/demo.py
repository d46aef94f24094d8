"""``make demo`` (``python -m aioipsec.demo``): two aioipsec daemons and a tunnel, as root.

What it does, step by step, printing each step:

1. creates two network namespaces, *left* and *right*, joined by a veth pair
   (192.168.100.1/24 <-> 192.168.100.2/24), with one host address inside each protected
   subnet (10.1.0.1 on the left, 10.2.0.1 on the right);
2. starts ``aioipsec daemon`` in each from the shipped example configs
   (``aioipsec/examples/demo-left.toml`` / ``demo-right.toml``: PSK,
   aes256gcm16-prfsha256-x25519, ESP aes256gcm16, 10.1.0.0/24 <-> 10.2.0.0/24);
3. starts a capture on the left veth, initiates the tunnel from the left
   (``aioipsec initiate --child net``) and pings 10.2.0.1 from 10.1.0.1 through it;
4. shows ``aioipsec sas`` from both sides and the ESP counters (``aioipsec stats``);
5. shows that the wire carried only ESP (the capture, read back with tshark or tcpdump);
6. stops both daemons (SIGTERM: they delete their IKE SAs) and removes everything,
   also when interrupted (Ctrl-C) or when a step fails.

Exit status 0 when the ping went through the tunnel and the wire held only IKE and ESP.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from aioipsec.netns import BackgroundProcess, Lab, Namespace, ensure_root

EXAMPLES = Path(__file__).resolve().parent / "examples"
LEFT_OUTER, RIGHT_OUTER = "192.168.100.1", "192.168.100.2"
LEFT_HOST, RIGHT_HOST = "10.1.0.1", "10.2.0.1"


class DemoFailed(RuntimeError):
    pass


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m" if sys.stdout.isatty() else f"\n==> {text}", flush=True)


def show(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"    {line}")
    sys.stdout.flush()


def aioipsec_cli(namespace: Namespace | None, socket_path: Path, *args: str) -> str:
    argv = [sys.executable, "-m", "aioipsec", *args, "--socket", str(socket_path)]
    if namespace is not None:
        argv = namespace.exec_argv(argv)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise DemoFailed(f"aioipsec {' '.join(args)}: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def prepare_config(example: Path, workdir: Path, side: str) -> tuple[Path, Path]:
    """Copy an example config, pointing its control socket into WORKDIR (mode 0600: it
    holds the PSK). Returns (config path, control socket path)."""
    socket_path = workdir / f"{side}.sock"
    lines = []
    for line in example.read_text().splitlines():
        if line.startswith("control_socket"):
            line = f'control_socket = "{socket_path}"'
        lines.append(line)
    config = workdir / example.name
    config.write_text("\n".join(lines) + "\n")
    config.chmod(0o600)
    return config, socket_path


def wait_for_socket(
    path: Path, process: BackgroundProcess, log: Path, timeout: float = 30.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        if not process.running():
            raise DemoFailed(f"the daemon exited:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    raise DemoFailed(f"the daemon did not open {path} within {timeout} s")


def summarize_capture(pcap: Path) -> tuple[list[str], dict[str, int]]:
    """(first lines of the capture as text, packet count per top protocol)."""
    if shutil.which("tshark"):
        listing = subprocess.run(
            ["tshark", "-n", "-r", str(pcap)], capture_output=True, text=True, check=False
        ).stdout.splitlines()
        protocols = subprocess.run(
            ["tshark", "-n", "-r", str(pcap), "-T", "fields", "-e", "frame.protocols"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
    else:
        listing = subprocess.run(
            ["tcpdump", "-n", "-r", str(pcap)], capture_output=True, text=True, check=False
        ).stdout.splitlines()
        protocols = [
            "eth:ip:esp" if " ESP(" in line else ("eth:ip:udp:isakmp" if "isakmp" in line
                                                  else "eth:ip:other")
            for line in listing
        ]  # fmt: skip
    counts: dict[str, int] = {}
    for stack in protocols:
        if ":esp" in stack:
            kind = "ESP-in-UDP" if ":udp:" in stack else "ESP"
        elif ":isakmp" in stack:
            kind = "IKE"
        elif ":arp" in stack or stack.split(":")[-1] == "arp":
            kind = "ARP"
        elif ":icmpv6" in stack or ":ipv6" in stack:
            kind = "IPv6 link-local (neighbour discovery)"
        else:
            kind = "other: " + stack
        counts[kind] = counts.get(kind, 0) + 1
    return listing, counts


def run_demo(keep_logs: bool = False) -> int:
    ensure_root()
    for tool in ("ip", "ping", "tcpdump"):
        if shutil.which(tool) is None:
            raise DemoFailed(f"{tool} is not installed (make demo installs the Debian packages)")

    def steps(workdir: Path) -> None:
        with Lab("demo") as lab:
            say("Two network namespaces joined by a veth pair")
            left, right = lab.namespace("left"), lab.namespace("right")
            left_dev, right_dev = lab.veth(left, f"{LEFT_OUTER}/24", right, f"{RIGHT_OUTER}/24")
            left.add_address("lo", f"{LEFT_HOST}/32")
            right.add_address("lo", f"{RIGHT_HOST}/32")
            show(
                f"{left.name}: {left_dev} {LEFT_OUTER}/24, protected host {LEFT_HOST} "
                "(subnet 10.1.0.0/24)\n"
                f"{right.name}: {right_dev} {RIGHT_OUTER}/24, protected host {RIGHT_HOST} "
                "(subnet 10.2.0.0/24)"
            )

            say("Starting one aioipsec daemon in each namespace (examples/demo-*.toml)")
            daemons = {}
            for side, namespace in (("left", left), ("right", right)):
                config, socket_path = prepare_config(EXAMPLES / f"demo-{side}.toml", workdir, side)
                log = workdir / f"{side}.log"
                process = lab.start(
                    namespace,
                    [sys.executable, "-m", "aioipsec", "daemon", "-c", str(config),
                     "--foreground"],
                    log=log,
                )  # fmt: skip
                daemons[side] = (namespace, socket_path, log, process)
            for side, (_, socket_path, log, process) in daemons.items():
                wait_for_socket(socket_path, process, log)
                show(f"{side}: daemon running, control socket {socket_path}")

            capture_path = workdir / "wire.pcap"
            # IPv4 only: the veth's IPv6 link-local chatter is not ours to show.
            capture = lab.capture(left, left_dev, capture_path, "not ip6")
            show(f"capturing on {left.name}/{left_dev} -> {capture_path}")

            say("Initiating the tunnel from the left: aioipsec initiate --child net")
            _, left_socket, _, _ = daemons["left"]
            _, right_socket, _, _ = daemons["right"]
            show(aioipsec_cli(left, left_socket, "initiate", "--child", "net"))

            say(f"Pinging {RIGHT_HOST} from {LEFT_HOST} through the tunnel")
            ping = left.run(
                "ping", "-n", "-c", "4", "-i", "0.3", "-W", "2", "-I", LEFT_HOST, RIGHT_HOST,
                check=False, timeout=30,
            )  # fmt: skip
            show(ping.stdout)
            ping_ok = ping.returncode == 0

            for side, socket_path in (("left", left_socket), ("right", right_socket)):
                say(f"aioipsec sas ({side})")
                show(aioipsec_cli(None, socket_path, "sas"))
            say("ESP counters (aioipsec stats)")
            for side, socket_path in (("left", left_socket), ("right", right_socket)):
                stats = json.loads(aioipsec_cli(None, socket_path, "stats", "--json"))
                esp = stats.get("esp", stats)
                show(
                    f"{side}: packets out {esp.get('packets_out', 0)}, "
                    f"in {esp.get('packets_in', 0)}, bytes out {esp.get('bytes_out', 0)}, "
                    f"in {esp.get('bytes_in', 0)}, ICV failures {esp.get('icv_failures', 0)}, "
                    f"replays {esp.get('replays', 0)}"
                )

            time.sleep(0.3)
            capture.stop()
            say(f"What the wire carried ({left_dev}): only IKE and ESP, no ICMP in clear")
            listing, counts = summarize_capture(capture_path)
            show("\n".join(listing[:16]) + ("\n..." if len(listing) > 16 else ""))
            show("summary: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))
            leaked = {
                kind: n
                for kind, n in counts.items()
                if kind not in ("ESP", "ESP-in-UDP", "IKE", "ARP")
                and not kind.startswith("IPv6 link-local")
            }

            say("Stopping the daemons (SIGTERM: each deletes its IKE SA)")
            for side, (_, _, _, process) in daemons.items():
                code = process.stop(signal.SIGTERM, timeout=10)
                show(f"{side}: exit status {code}")

            if not ping_ok:
                raise DemoFailed("the ping did not go through the tunnel")
            if leaked:
                raise DemoFailed(f"traffic other than IKE/ESP on the wire: {leaked}")
            if not any(kind.startswith("ESP") for kind in counts):
                raise DemoFailed("no ESP on the wire")
            say("Demo finished: the ping crossed the tunnel and the wire carried only ESP")

    return guarded(steps, keep_logs)


def guarded(steps: Callable[[Path], None], keep_logs: bool) -> int:
    """Run a demo's STEPS in a fresh work directory: 0 when they finish, 1 (with the daemon
    logs' last lines) when a step fails, 130 when interrupted; the directory goes after."""
    workdir = Path(tempfile.mkdtemp(prefix="aioipsec-demo-"))
    status = 1
    try:
        steps(workdir)
        status = 0
    except DemoFailed as failure:
        print(f"\ndemo failed: {failure}", file=sys.stderr)
        for log in sorted(workdir.glob("*.log")):
            print(f"--- {log.name} (last lines)", file=sys.stderr)
            print("\n".join(log.read_text(errors="replace").splitlines()[-30:]), file=sys.stderr)
    except KeyboardInterrupt:
        print("\ninterrupted: everything was cleaned up", file=sys.stderr)
        status = 130
    finally:
        if keep_logs:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return status


def demo_main(
    argv: list[str] | None, prog: str, description: str, run: Callable[[bool], int]
) -> int:
    """The command line of a demo: --keep-logs, signals that clean up, root required."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--keep-logs", action="store_true", help="keep the daemon logs")
    args = parser.parse_args(argv)
    # SIGTERM (e.g. from a CI timeout) cleans up like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    # Ctrl-C must interrupt even when started from a shell that ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if os.geteuid() != 0:
        print(f"{prog} needs root (network namespaces, TUN devices)", file=sys.stderr)
        return 1
    return run(args.keep_logs)


def main(argv: list[str] | None = None) -> int:
    return demo_main(
        argv,
        "python -m aioipsec.demo",
        "Two aioipsec daemons in network namespaces: tunnel, ping, listing, capture, "
        "cleanup (needs root).",
        lambda keep_logs: run_demo(keep_logs=keep_logs),
    )


if __name__ == "__main__":
    raise SystemExit(main())
