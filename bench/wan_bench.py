#!/usr/bin/env python3
"""Lifeboat over a shaped WAN link to a real S3 server (SeaweedFS): cross-VM clone dedup
(bytes on the wire, cold and warm node cache) and link utilisation by upload streams,
against restic over the same link, in one run. Needs root (network namespaces, tc).

    python -m bench.wan_bench [--size-mib 512] [--runs 3] [--links 100:20,50:40]
                              [--streams 1,2,4,8] [--fraction 0.02]
                              [--json bench/wan_results.json] [--out docs/BENCHMARKS.md]
    python -m bench.wan_bench --smoke         # 64 MiB, 1 run, one link; leaves the doc alone
    python -m bench.wan_bench --render-only   # re-render the doc section from the JSON

The link. This kernel has no ``sch_netem``, so the WAN is built from what it has: three
network namespaces in a line, ``root (client: the lifeboat / restic CLIs) -- veth --
lbwan (a router) -- veth -- lbwan-srv (weed mini, the S3 server)``. The router forwards every
packet, both ways, through a TUN device served by a small C delay line (``DELAYLINE_C``,
compiled at start with ``cc``) that holds each packet for the one-way delay; ``tbf`` on the
router's two egress veths limits the rate each way (queue: 100 ms of the rate), so the
bottleneck queue sits in the router, not on the sender's host. Offloads (TSO/GSO/GRO) are
off on every veth, so frames are MTU-sized. ``--links RATE_MBIT:DELAY_MS`` lists the
settings; the delay is one-way, applied in both directions (RTT = 2 x delay), like
``tc ... netem rate R delay D`` on both ends. Bytes on the wire: the client veth's
``/sys/class/net/lbwan-c/statistics/{tx,rx}_bytes`` deltas around each measured command
(tx = up, client to server, *including* retransmissions of frames the bottleneck queue
dropped; rx = down), Ethernet frames without preamble/FCS; and the bytes *delivered* past
the bottleneck (the router's egress veths' ``tx_bytes``, sampled every 50 ms by a helper
in the router namespace: throughput and its window come from these). Everything
(namespaces, veths, delay line, sampler, SeaweedFS) is torn down in a ``finally``, and
stale leftovers of a killed run at start.

1. Clone dedup, per link and run (fresh S3 prefixes each run). Repository A: ``repo
   init``; the template image (``make_disk.py create``, seed 1) replicated as disk
   ``template``; ``repo compact`` (the index becomes a generation of shards); the clone (a
   copy of the template, ``make_disk.py mutate --fraction F --seed 11``) replicated as
   disk ``clone`` with a fresh ``LIFEBOAT_CACHE_DIR`` (cold node cache). Repository B: the
   same up to the compaction, then ``repo info`` on the template's node (it loads the
   whole index through the node cache) and the same clone replicated on that node (warm
   cache). restic the same way: ``init``, ``backup`` of the template, then of the clone
   with a fresh ``--cache-dir`` (A) or with the template backup's cache (B).
2. Link utilisation, per link and run: an image (seed 2) replicated in full into a fresh
   prefix with ``--streams`` 1, 2, 4, 8 (fresh cache), and restic's backup of it (default
   ``s3.connections=5``); delivered throughput over the whole command and over the window
   in which the middle 90% of its upload bytes were delivered, against the link rate.

Default ``replicate`` options otherwise (1 MiB blocks, zstd 1, AES-256-GCM, workers =
CPUs); repositories are created by ``lifeboat repo init`` (default KDF: its cost is in
every command's wall time, not on the wire). Medians of ``--runs``; min-max shown.
Writes ``--json`` and the section between ``<!-- wan:start -->`` and ``<!-- wan:end -->``
of ``--out`` (appended at the end if missing).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.run import (  # noqa: E402
    MAKE_DISK,
    cpu_and_ram,
    first_line,
    median,
    replace_section,
    rmtree,
    spread,
    table,
)
from tests.servers import SeaweedFS, ServerProcess, free_ports, wait_ready  # noqa: E402

RESULTS_JSON = ROOT / "bench" / "wan_results.json"
DOC = ROOT / "docs" / "BENCHMARKS.md"
START, END = "<!-- wan:start -->", "<!-- wan:end -->"
PASSWORD = "lifeboat-bench-passphrase"
MIB = 1 << 20
BUCKET = "wan-bench"
ROUTER_NS, SERVER_NS = "lbwan", "lbwan-srv"
CLIENT_IF, ROUTER_A, ROUTER_B, SERVER_IF, TUN = "lbwan-c", "lbwan-ra", "lbwan-rb", "lbwan-s", "lbwan-d"
CLIENT_IP, ROUTER_A_IP, ROUTER_B_IP, SERVER_IP = "10.77.1.1", "10.77.1.2", "10.77.2.1", "10.77.2.2"
SAMPLE_S = 0.05
CLONE_SEEDS = (11,)
LB_ROWS = ("template", "compact", "clone_cold", "info", "clone_warm")
RESTIC_ROWS = ("template", "clone_cold", "clone_warm")
ROW_LABELS = {
    "template": "template, full (first replication / backup)",
    "compact": "`repo compact` (index → one generation)",
    "clone_cold": "clone, cold cache (fresh cache folder)",
    "info": "(repository B) `repo info`: loads the index into the template node's cache",
    "clone_warm": "(repository B) clone, warm cache (the template node's)",
}
RESTIC_LABELS = {**ROW_LABELS, "clone_warm": "(repository B) clone, warm cache (the template backup's)"}
T_START = time.perf_counter()

DELAYLINE_C = r"""
/* A fixed one-way delay for every packet through a TUN device (no netem in this kernel). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 16384
#define SNAP 2048
static unsigned char buf[SLOTS][SNAP];
static int len[SLOTS];
static long long due[SLOTS];

static long long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s TUN DELAY_US\n", argv[0]); return 2; }
    long long delay = atoll(argv[2]) * 1000LL;
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK);
    if (fd < 0) { perror("open /dev/net/tun"); return 1; }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TUN | IFF_NO_PI;
    strncpy(ifr.ifr_name, argv[1], IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) { perror("TUNSETIFF"); return 1; }
    fprintf(stderr, "delayline: %s, %lld us\n", argv[1], delay / 1000);
    unsigned head = 0, tail = 0;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        struct timespec ts, *tp = NULL;
        if (head != tail) {
            long long wait = due[head % SLOTS] - now_ns();
            if (wait < 0) wait = 0;
            ts.tv_sec = wait / 1000000000LL;
            ts.tv_nsec = wait % 1000000000LL;
            tp = &ts;
        }
        if (ppoll(&p, 1, tp, NULL) < 0 && errno != EINTR) { perror("ppoll"); return 1; }
        if (p.revents & POLLIN) {
            for (;;) {
                if (tail - head >= SLOTS) {
                    static unsigned char sink[SNAP];
                    if (read(fd, sink, SNAP) < 0) break;
                    continue;
                }
                int n = read(fd, buf[tail % SLOTS], SNAP);
                if (n <= 0) break;
                len[tail % SLOTS] = n;
                due[tail % SLOTS] = now_ns() + delay;
                tail++;
            }
        }
        long long t = now_ns();
        while (head != tail && due[head % SLOTS] <= t) {
            if (write(fd, buf[head % SLOTS], len[head % SLOTS]) < 0 && errno != EAGAIN) perror("write");
            head++;
        }
    }
}
"""


class BenchError(SystemExit):
    def __init__(self, message: str) -> None:
        super().__init__(f"wan bench: {message}")


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T_START:7.1f}s] {msg}", file=sys.stderr, flush=True)


def loadavg() -> str:
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def sh(*cmd: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    argv = ["ip", "netns", "exec", ns, *cmd] if ns else list(cmd)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise BenchError(f"command failed (exit {proc.returncode}): {' '.join(argv)}\n{proc.stderr[-2000:]}")
    return proc


def mib(n: float) -> str:
    return f"{n / MIB:.1f} MiB"


# --------------------------------------------------------------------------- the link


class Wan:
    """The three namespaces, the delay line and the shapers (see the module doc)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.delayline: subprocess.Popen[bytes] | None = None
        self.binary = work / "delayline"
        self.link: tuple[int, int] | None = None
        self.sampler: subprocess.Popen[str] | None = None
        self.delivered_samples: list[tuple[float, int, int]] = []

    def build(self) -> None:
        src = self.work / "delayline.c"
        src.write_text(DELAYLINE_C)
        sh("cc", "-O2", "-Wall", "-o", str(self.binary), str(src))

    @staticmethod
    def teardown() -> None:
        """Remove every piece, whatever state a (killed) run left; never raises."""
        for args in (
            ["ip", "link", "del", CLIENT_IF],
            ["ip", "netns", "del", ROUTER_NS],
            ["ip", "netns", "del", SERVER_NS],
        ):
            subprocess.run(args, capture_output=True, check=False)

    def up(self) -> None:
        self.teardown()
        self.build()
        sh("ip", "netns", "add", ROUTER_NS)
        sh("ip", "netns", "add", SERVER_NS)
        sh("ip", "link", "add", CLIENT_IF, "type", "veth", "peer", "name", ROUTER_A)
        sh("ip", "link", "set", ROUTER_A, "netns", ROUTER_NS)
        sh("ip", "link", "add", ROUTER_B, "type", "veth", "peer", "name", SERVER_IF, ns=ROUTER_NS)
        sh("ip", "link", "set", SERVER_IF, "netns", SERVER_NS, ns=ROUTER_NS)
        sh("ip", "addr", "add", f"{CLIENT_IP}/24", "dev", CLIENT_IF)
        sh("ip", "link", "set", CLIENT_IF, "up")
        sh("ip", "route", "add", f"{SERVER_IP.rsplit('.', 1)[0]}.0/24", "via", ROUTER_A_IP)
        r = ROUTER_NS
        sh("ip", "link", "set", "lo", "up", ns=r)
        sh("ip", "addr", "add", f"{ROUTER_A_IP}/24", "dev", ROUTER_A, ns=r)
        sh("ip", "addr", "add", f"{ROUTER_B_IP}/24", "dev", ROUTER_B, ns=r)
        sh("ip", "link", "set", ROUTER_A, "up", ns=r)
        sh("ip", "link", "set", ROUTER_B, "up", ns=r)
        sh("ip", "tuntap", "add", "dev", TUN, "mode", "tun", ns=r)
        sh("ip", "link", "set", TUN, "txqueuelen", "10000", "up", ns=r)
        sysctls = ["net.ipv4.ip_forward=1"] + [
            f"net.ipv4.conf.{i}.rp_filter=0" for i in ("all", "default", TUN, ROUTER_A, ROUTER_B)
        ]
        sh("sysctl", "-qw", *sysctls, ns=r)
        # whatever enters from either veth goes through the TUN (the delay line); what the
        # delay line writes back enters from the TUN and is routed by the main table
        sh("ip", "route", "add", "default", "dev", TUN, "table", "101", ns=r)
        sh("ip", "rule", "add", "iif", ROUTER_A, "lookup", "101", "pref", "100", ns=r)
        sh("ip", "rule", "add", "iif", ROUTER_B, "lookup", "101", "pref", "101", ns=r)
        s = SERVER_NS
        sh("ip", "link", "set", "lo", "up", ns=s)
        sh("ip", "addr", "add", f"{SERVER_IP}/24", "dev", SERVER_IF, ns=s)
        sh("ip", "link", "set", SERVER_IF, "up", ns=s)
        sh("ip", "route", "add", "default", "via", ROUTER_B_IP, ns=s)
        for dev, ns in ((CLIENT_IF, None), (ROUTER_A, r), (ROUTER_B, r), (SERVER_IF, s)):
            sh("ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off", ns=ns)

    def set_link(self, rate_mbit: int, delay_ms: int) -> None:
        """(Re)start the delay line with ``delay_ms`` each way and shape both ways to the rate."""
        self.stop_delayline()
        self.delayline = subprocess.Popen(
            ["ip", "netns", "exec", ROUTER_NS, str(self.binary), TUN, str(delay_ms * 1000)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.work / "delayline.log", "ab"),  # noqa: SIM115 (the child owns it)
            start_new_session=True,
        )
        limit = max(rate_mbit * 1_000_000 // 8 // 10, 64 * 1024)  # 100 ms of the rate
        burst = max(rate_mbit * 1_000_000 // 8 // 1000, 16 * 1024)  # 1 ms of the rate
        for dev in (ROUTER_A, ROUTER_B):
            sh("tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", f"{rate_mbit}mbit",
               "burst", str(burst), "limit", str(limit), ns=ROUTER_NS)  # fmt: skip
        self.link = (rate_mbit, delay_ms)
        rtt = self.rtt_ms()
        log(f"link {rate_mbit} Mbit/s, {delay_ms} ms each way: TCP connect RTT {rtt:.1f} ms")

    def rtt_ms(self) -> float:
        """A TCP connect to a closed port of the server: one round trip (SYN, RST)."""
        import socket

        best = float("inf")
        for _ in range(5):
            t = time.perf_counter()
            try:
                socket.create_connection((SERVER_IP, 9), timeout=5).close()
            except ConnectionRefusedError:
                pass
            except OSError as exc:
                raise BenchError(f"the link does not work: {exc}") from exc
            best = min(best, (time.perf_counter() - t) * 1000)
        return best

    def start_sampler(self) -> None:
        """A process in the router namespace printing, every SAMPLE_S, the bytes its egress
        veths sent: towards the server (up, past the bottleneck) and towards the client (down)."""
        code = (
            "import time\n"
            "def rd(i):\n"
            "    with open(f'/sys/class/net/{i}/statistics/tx_bytes') as f: return f.read().strip()\n"
            "while True:\n"
            f"    print(time.monotonic(), rd('{ROUTER_B}'), rd('{ROUTER_A}'), flush=True)\n"
            f"    time.sleep({SAMPLE_S})\n"
        )
        self.sampler = subprocess.Popen(
            ["ip", "netns", "exec", ROUTER_NS, sys.executable, "-u", "-c", code],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, start_new_session=True,
        )  # fmt: skip
        self.delivered_samples: list[tuple[float, int, int]] = []

        def read() -> None:
            assert self.sampler is not None and self.sampler.stdout is not None
            for line in self.sampler.stdout:
                t, up, down = line.split()
                self.delivered_samples.append((float(t), int(up), int(down)))

        threading.Thread(target=read, daemon=True).start()
        self.delivered()

    def delivered(self) -> tuple[float, int, int]:
        """A sample of the router's egress counters taken after this call began."""
        start = time.monotonic()
        deadline = start + 10
        while time.monotonic() < deadline:
            if self.delivered_samples and self.delivered_samples[-1][0] > start:
                return self.delivered_samples[-1]
            time.sleep(SAMPLE_S / 5)
        raise BenchError("the counter sampler in the router namespace does not answer")

    def stop_sampler(self) -> None:
        if self.sampler is not None and self.sampler.poll() is None:
            self.sampler.terminate()
            self.sampler.wait(10)
        self.sampler = None

    def stop_delayline(self) -> None:
        if self.delayline is not None and self.delayline.poll() is None:
            self.delayline.terminate()
            try:
                self.delayline.wait(10)
            except subprocess.TimeoutExpired:
                self.delayline.kill()
                self.delayline.wait(10)
        self.delayline = None

    def down(self) -> None:
        self.stop_sampler()
        self.stop_delayline()
        self.teardown()

    @staticmethod
    def counters() -> tuple[int, int]:
        base = Path("/sys/class/net") / CLIENT_IF / "statistics"
        return int((base / "tx_bytes").read_text()), int((base / "rx_bytes").read_text())


def start_seaweedfs_in_ns(work: Path) -> SeaweedFS:
    """``weed mini`` inside the server namespace, bound to its address, auth on, one bucket."""
    weed = shutil.which("weed") or os.environ.get("LIFEBOAT_WEED")
    if not weed:
        raise BenchError("weed (SeaweedFS) not found")
    access_key = f"LBWAN{uuid.uuid4().hex[:15].upper()}"
    secret_key = f"secret-{uuid.uuid4().hex}"
    run = work / "seaweedfs"
    data, logs, tmp = run / "data", run / "logs", run / "tmp"
    for d in (data, logs, tmp):
        d.mkdir(parents=True, exist_ok=True)
    # ports free in the root namespace too: weed names its gRPC unix sockets in the shared
    # /tmp after the port, so this keeps clear of other weed servers on the machine
    (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc, admin, admin_grpc) = (
        free_ports(10)
    )
    argv = ["ip", "netns", "exec", SERVER_NS, weed, f"-logdir={logs}", "mini", f"-dir={data}",
            f"-ip={SERVER_IP}", f"-ip.bind={SERVER_IP}",
            f"-master.port={master}", f"-master.port.grpc={master_grpc}",
            f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={tmp / 'filer.sock'}",
            f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-s3.localSocket={tmp / 's3.sock'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-s3.autoCreateBucket=false",
            f"-admin.port={admin}", f"-admin.port.grpc={admin_grpc}", "-admin.ui=false",
            "-webdav=false", "-master.telemetry=false"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_"))}
    env.update(AWS_ACCESS_KEY_ID=access_key, AWS_SECRET_ACCESS_KEY=secret_key, TMPDIR=str(tmp))
    server = ServerProcess("seaweedfs", argv, run / "weed.log", env=env, cwd=run).start()
    grpc = (master_grpc, volume_grpc, filer_grpc, s3_grpc, admin_grpc)
    info = SeaweedFS(f"http://{SERVER_IP}:{s3}", access_key, secret_key, BUCKET, server, grpc_ports=grpc)
    try:
        client = info.client(retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=10)

        def bucket_works() -> bool:
            from botocore.exceptions import ClientError

            try:
                client.create_bucket(Bucket=BUCKET)
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
            client.put_object(Bucket=BUCKET, Key="_ready", Body=b"ok")
            ok = client.get_object(Bucket=BUCKET, Key="_ready")["Body"].read() == b"ok"
            client.delete_object(Bucket=BUCKET, Key="_ready")
            return ok

        wait_ready(server, bucket_works, timeout=120)
    except BaseException:
        info.stop()
        raise
    return info


# --------------------------------------------------------------------------- measuring


class Meter:
    """Runs one command and measures it: wall time; bytes the client veth sent (up, with
    retransmissions of what the bottleneck dropped) and received (down); bytes delivered
    past the bottleneck each way; the upload's middle-90% window on the delivered bytes."""

    def __init__(self, wan: Wan, env: dict[str, str]) -> None:
        self.wan = wan
        self.env = env

    def run(
        self, cmd: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> dict[str, Any]:
        d0 = self.wan.delivered()
        n0 = len(self.wan.delivered_samples)
        tx0, rx0 = Wan.counters()
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, env={**self.env, **(env or {})}, cwd=cwd, capture_output=True, text=True,
                stdin=subprocess.DEVNULL, timeout=3600, check=False,
            )  # fmt: skip
        finally:
            seconds = time.perf_counter() - t0
        tx1, rx1 = Wan.counters()
        time.sleep(0.1)  # the last frames reach the far end of the delay line
        d1 = self.wan.delivered()
        samples = self.wan.delivered_samples[max(n0 - 1, 0) :]
        if proc.returncode != 0:
            raise BenchError(
                f"command failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-3000:]}"
            )
        up, down = tx1 - tx0, rx1 - rx0
        out: dict[str, Any] = {
            "seconds": seconds,
            "up_bytes": up,
            "down_bytes": down,
            "up_delivered_bytes": d1[1] - d0[1],
            "down_delivered_bytes": d1[2] - d0[2],
            "stdout": proc.stdout,
        }
        out.update(window(samples, d0[1], d1[1] - d0[1]))
        return out


def window(samples: list[tuple[float, int, int]], tx0: int, total: int) -> dict[str, float]:
    """Seconds in which the 5th..95th percentile of the upload bytes crossed, and the rate."""
    if total < 4 * MIB or len(samples) < 4:
        return {"window_s": 0.0, "window_mbit_s": 0.0}
    lo_b, hi_b = tx0 + 0.05 * total, tx0 + 0.95 * total

    def when(level: float) -> float:
        for (t1, x1, _), (t2, x2, _) in itertools.pairwise(samples):
            if x2 >= level:
                return t1 + (t2 - t1) * ((level - x1) / (x2 - x1) if x2 > x1 else 1.0)
        return samples[-1][0]

    span = max(when(hi_b) - when(lo_b), 1e-6)
    return {"window_s": span, "window_mbit_s": 0.9 * total * 8 / span / 1e6}


class WanBench:
    def __init__(self, work: Path, size_mib: int, fraction: float, runs: int, streams: list[int]) -> None:
        self.work = work
        self.size_mib = size_mib
        self.fraction = fraction
        self.runs = runs
        self.streams = streams
        self.wan = Wan(work)
        self.s3: SeaweedFS | None = None
        self.images = work / "images"

    # ---- set-up
    def make_images(self) -> dict[str, Any]:
        self.images.mkdir(parents=True, exist_ok=True)
        t, u = self.images / "template.img", self.images / "full.img"
        for img, seed in ((t, 1), (u, 2)):
            sh(
                sys.executable,
                str(MAKE_DISK),
                "create",
                str(img),
                "--size",
                f"{self.size_mib}M",
                "--seed",
                str(seed),
            )
        info: dict[str, Any] = {"size_bytes": t.stat().st_size}
        for i, seed in enumerate(CLONE_SEEDS, 1):
            clone = self.images / f"clone{i}.img"
            sh("cp", "--sparse=always", str(t), str(clone))
            ext = self.images / f"clone{i}.json"
            sh(sys.executable, str(MAKE_DISK), "mutate", str(clone), "--fraction", str(self.fraction),
               "--seed", str(seed), "--extents-out", str(ext))  # fmt: skip
            extents = json.loads(ext.read_text())
            info[f"clone{i}_changed_bytes"] = sum(n for _, n in extents)
        for name, img in (("template", t), ("full", u)):
            info[f"{name}_allocated_bytes"] = allocated(img)
            info[f"{name}_zstd1_bytes"] = int(
                subprocess.run(
                    f"zstd -1 -T2 -c {img} | wc -c", shell=True, check=True, capture_output=True, text=True
                ).stdout.split()[0]
            )
        return info

    def env(self) -> dict[str, str]:
        assert self.s3 is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "AZURE_", "RESTIC_"))}
        env.update(
            AWS_ENDPOINT_URL=self.s3.endpoint,
            AWS_ACCESS_KEY_ID=self.s3.access_key,
            AWS_SECRET_ACCESS_KEY=self.s3.secret_key,
            AWS_DEFAULT_REGION=self.s3.region,
            LIFEBOAT_PASSWORD=PASSWORD,
            RESTIC_PASSWORD=PASSWORD,
        )
        return env

    def lb(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cli.main", *args]

    def lb_url(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"

    def restic_url(self, prefix: str) -> str:
        assert self.s3 is not None
        return f"s3:{self.s3.endpoint}/{BUCKET}/{prefix}"

    def cache(self, name: str) -> dict[str, str]:
        path = self.work / "caches" / name
        rmtree(path)
        path.mkdir(parents=True)
        return {"LIFEBOAT_CACHE_DIR": str(path)}

    # ---- 1. clone dedup
    def clone_run(self, m: Meter, tag: str) -> dict[str, Any]:
        """Repository A: template, compact, clone with a fresh cache (cold). Repository B: the
        same up to the compaction, then ``repo info`` on the template's node (which loads the
        whole index into its cache) and the clone on that node (warm). restic alike."""
        img = self.images
        tmpl, clone = str(img / "template.img"), str(img / "clone1.img")
        out: dict[str, Any] = {"lifeboat": {}, "restic": {}}
        lb = out["lifeboat"]
        for repo in ("a", "b"):
            url = self.lb_url(f"lb-{tag}-{repo}")
            node = self.cache(f"{tag}-{repo}-node")  # the node that replicates the template, compacts
            init = strip(m.run(self.lb("repo", "init", url), env=node))
            tr = replicated(
                m.run(self.lb("replicate", "--repo", url, "--disk", "template", "--json", tmpl), env=node)
            )
            cp = compacted(m.run(self.lb("repo", "compact", url, "--json"), env=node))
            if repo == "a":
                lb.update(init=init, template=tr, compact=cp)
                lb["node_cache_after_compact"] = cache_listing(Path(node["LIFEBOAT_CACHE_DIR"]))
                fresh = self.cache(f"{tag}-a-fresh")
                lb["clone_cold"] = replicated(
                    m.run(self.lb("replicate", "--repo", url, "--disk", "clone", "--json", clone), env=fresh)
                )
                lb["cache_after_cold"] = cache_listing(Path(fresh["LIFEBOAT_CACHE_DIR"]))
            else:
                lb.update(template_b=tr, compact_b=cp)
                lb["info"] = strip(m.run(self.lb("repo", "info", url), env=node))
                lb["node_cache_after_info"] = cache_listing(Path(node["LIFEBOAT_CACHE_DIR"]))
                lb["clone_warm"] = replicated(
                    m.run(self.lb("replicate", "--repo", url, "--disk", "clone", "--json", clone), env=node)
                )
        r = out["restic"]
        for repo in ("a", "b"):
            rurl = self.restic_url(f"restic-{tag}-{repo}")
            node = self.work / "caches" / f"{tag}-{repo}-restic"
            rmtree(node)
            restic = ["restic", "-r", rurl, "--json"]
            m.run(["restic", "-r", rurl, "--cache-dir", str(node), "init"])
            tr = restic_summary(m.run([*restic, "--cache-dir", str(node), "backup", "template.img"], cwd=img))
            if repo == "a":
                r["template"] = tr
                fresh = self.work / "caches" / f"{tag}-a-restic-fresh"
                rmtree(fresh)
                r["clone_cold"] = restic_summary(
                    m.run([*restic, "--cache-dir", str(fresh), "backup", "clone1.img"], cwd=img)
                )
            else:
                r["template_b"] = tr
                r["clone_warm"] = restic_summary(
                    m.run([*restic, "--cache-dir", str(node), "backup", "clone1.img"], cwd=img)
                )
        return out

    # ---- 2. link utilisation
    def util_run(self, m: Meter, tag: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        full = str(self.images / "full.img")
        for s in self.streams:
            url = self.lb_url(f"lb-{tag}-s{s}")
            env = self.cache(f"{tag}-s{s}")
            m.run(self.lb("repo", "init", url), env=env)
            out[f"streams-{s}"] = replicated(
                m.run(
                    self.lb(
                        "replicate", "--repo", url, "--disk", "full", "--streams", str(s), "--json", full
                    ),
                    env=env,
                )
            )
        rurl = self.restic_url(f"restic-util-{tag}")
        rc = self.work / "caches" / f"{tag}-restic"
        rmtree(rc)
        m.run(["restic", "-r", rurl, "--cache-dir", str(rc), "init"])
        out["restic"] = restic_summary(
            m.run(
                ["restic", "-r", rurl, "--json", "--cache-dir", str(rc), "backup", "full.img"],
                cwd=self.images,
            )
        )
        return out

    def run(self, links: list[tuple[int, int]]) -> dict[str, Any]:
        self.wan.up()
        try:
            self.wan.set_link(*links[0])
            log("starting SeaweedFS in the server namespace")
            self.s3 = start_seaweedfs_in_ns(self.work)
            self.wan.start_sampler()
            m = Meter(self.wan, self.env())
            results = []
            for rate, delay in links:
                self.wan.set_link(rate, delay)
                rtt = self.wan.rtt_ms()
                link: dict[str, Any] = {
                    "rate_mbit": rate,
                    "delay_ms": delay,
                    "rtt_ms": rtt,
                    "clone": [],
                    "util": [],
                }
                for i in range(self.runs):
                    tag = f"{rate}m{delay}-{i}"
                    log(f"[{rate} Mbit/s, {delay} ms] run {i + 1}/{self.runs}: clone dedup")
                    link["clone"].append(self.clone_run(m, tag))
                    log(f"[{rate} Mbit/s, {delay} ms] run {i + 1}/{self.runs}: link utilisation")
                    link["util"].append(self.util_run(m, tag))
                results.append(link)
            return {"links": results}
        finally:
            if self.s3 is not None:
                self.s3.stop()
            self.wan.down()


def strip(x: dict[str, Any]) -> dict[str, Any]:
    x.pop("stdout", None)
    return x


def replicated(x: dict[str, Any]) -> dict[str, Any]:
    text = x.pop("stdout")
    doc = json.loads(text.rsplit("\n", 2)[0])
    x["stats"] = doc["stats"]
    return x


def compacted(x: dict[str, Any]) -> dict[str, Any]:
    x["report"] = json.loads(x.pop("stdout"))
    return x


def restic_summary(x: dict[str, Any]) -> dict[str, Any]:
    lines = [json.loads(ln) for ln in x.pop("stdout").splitlines() if ln.startswith("{")]
    summary = next((d for d in lines if d.get("message_type") == "summary"), {})
    x["stats"] = {k: v for k, v in summary.items() if k != "message_type"}
    return x


def cache_listing(root: Path) -> dict[str, Any]:
    files = [p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")]
    kinds: dict[str, int] = {}
    for p in files:
        kind = p.relative_to(root).parts[1] if len(p.relative_to(root).parts) > 2 else "?"
        kinds[kind] = kinds.get(kind, 0) + 1
    return {"files": len(files), "bytes": sum(p.stat().st_size for p in files), "by_folder": kinds}


def allocated(img: Path) -> int:
    """Bytes of an image outside holes (SEEK_DATA)."""
    total, pos = 0, 0
    with open(img, "rb") as f:
        fd, size = f.fileno(), os.fstat(f.fileno()).st_size
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            total += end - start
            pos = end
    return total


# --------------------------------------------------------------------------- summary


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    out = []
    for link in res["links"]:
        rate = link["rate_mbit"]
        runs = link["clone"]

        def row(tool: str, key: str, runs: list[dict[str, Any]] = runs) -> dict[str, Any]:
            xs = [r[tool][key] for r in runs]
            d: dict[str, Any] = {
                "seconds": median([x["seconds"] for x in xs]),
                "seconds_all": [x["seconds"] for x in xs],
            }
            for k in ("up_bytes", "down_bytes", "up_delivered_bytes", "down_delivered_bytes"):
                d[k] = median([x[k] for x in xs])
            st = [x.get("stats", {}) for x in xs]
            if tool == "lifeboat" and st[0]:
                for k in ("blocks_new", "bytes_new_stored", "blocks_read"):
                    d[k] = median([s[k] for s in st])
            if tool == "restic":
                d["data_added"] = median([s.get("data_added", 0) for s in st])
                d["data_blobs"] = median([s.get("data_blobs", 0) for s in st])
            return d

        clone = {"lifeboat": {k: row("lifeboat", k) for k in LB_ROWS},
                 "restic": {k: row("restic", k) for k in RESTIC_ROWS}}  # fmt: skip
        util: dict[str, Any] = {}
        for key in [*(f"streams-{s}" for s in res["params"]["streams"]), "restic"]:
            xs = [u[key] for u in link["util"]]
            secs = [x["seconds"] for x in xs]
            wall_mbit = median([x["up_delivered_bytes"] * 8 / x["seconds"] / 1e6 for x in xs])
            win_mbit = median([x["window_mbit_s"] for x in xs])
            util[key] = {
                "seconds": median(secs),
                "seconds_all": secs,
                "up_bytes": median([x["up_bytes"] for x in xs]),
                "up_delivered_bytes": median([x["up_delivered_bytes"] for x in xs]),
                "down_bytes": median([x["down_bytes"] for x in xs]),
                "resent": median(
                    [(x["up_bytes"] - x["up_delivered_bytes"]) / x["up_delivered_bytes"] for x in xs]
                ),
                "wall_mbit_s": wall_mbit,
                "window_mbit_s": win_mbit,
                "wall_util": wall_mbit / rate,
                "window_util": win_mbit / rate,
                "stored": median(
                    [x["stats"].get("bytes_new_stored", x["stats"].get("data_added", 0)) for x in xs]
                ),
            }
        lbc, rsc = clone["lifeboat"], clone["restic"]

        def both(x: dict[str, Any]) -> float:
            return x["up_bytes"] + x["down_bytes"]

        ratios = {
            "lifeboat clone cold: wire up / template full wire up": lbc["clone_cold"]["up_bytes"]
            / lbc["template"]["up_bytes"],
            "lifeboat clone warm: wire up / template full wire up": lbc["clone_warm"]["up_bytes"]
            / lbc["template"]["up_bytes"],
            "lifeboat clone cold / warm: wire down": lbc["clone_cold"]["down_bytes"]
            / lbc["clone_warm"]["down_bytes"],
            "lifeboat clone cold / warm: wall": lbc["clone_cold"]["seconds"] / lbc["clone_warm"]["seconds"],
            "restic clone cold: wire up / template wire up": rsc["clone_cold"]["up_bytes"]
            / rsc["template"]["up_bytes"],
            "restic clone cold / warm: wire down": rsc["clone_cold"]["down_bytes"]
            / rsc["clone_warm"]["down_bytes"],
            "lifeboat / restic, template full: wire up": lbc["template"]["up_bytes"]
            / rsc["template"]["up_bytes"],
            "lifeboat / restic, template full: wall": lbc["template"]["seconds"] / rsc["template"]["seconds"],
            "lifeboat / restic, clone cold: wire up+down": both(lbc["clone_cold"]) / both(rsc["clone_cold"]),
            "lifeboat / restic, clone warm: wire up+down": both(lbc["clone_warm"]) / both(rsc["clone_warm"]),
            "lifeboat / restic, clone cold: wall": lbc["clone_cold"]["seconds"]
            / rsc["clone_cold"]["seconds"],
            "lifeboat / restic, clone warm: wall": lbc["clone_warm"]["seconds"]
            / rsc["clone_warm"]["seconds"],
        }
        s_max = f"streams-{max(res['params']['streams'])}"
        if "streams-1" in util and util["streams-1"]["window_mbit_s"]:
            ratios[f"{s_max} / streams-1: delivered throughput (window)"] = (
                util[s_max]["window_mbit_s"] / util["streams-1"]["window_mbit_s"]
            )
        if "streams-4" in util:
            ratios["lifeboat streams-4 / restic: wall (full image)"] = (
                util["streams-4"]["seconds"] / util["restic"]["seconds"]
            )
        out.append({"rate_mbit": rate, "delay_ms": link["delay_ms"], "rtt_ms": link["rtt_ms"], "clone": clone,
                    "util": util, "ratios": ratios})  # fmt: skip
    return {"links": out}


# --------------------------------------------------------------------------- render


def render(res: dict[str, Any]) -> str:
    mach, p, info = res["machine"], res["params"], res["images"]
    out = [
        START,
        "## WAN: a real S3 server over a shaped link (clone dedup, link utilisation)",
        "",
        f"Generated by `python -m bench.wan_bench` ({mach['date']}, commit `{mach['commit']}`, "
        f"{p['total_minutes']:.0f} min); raw data in `{p['json']}`. {mach['nproc']} cores ({mach['CPU']}), "
        f"{mach['RAM']} RAM, kernel {mach['kernel']}, {mach['weed']}, {mach['restic']}; load average "
        f"{mach['load_start']} at start, {mach['load_end']} at the end. **Another CPU-heavy benchmark ran on "
        "this machine at the same time**: wall times are noisy, so every figure is the median of "
        f"{p['runs']} runs (min-max shown) and the comparisons are ratios; bytes on the wire barely vary.",
        "",
        "Set-up: the client CLIs (`lifeboat`, `restic`) in the root network namespace, SeaweedFS "
        "(`weed mini`, S3 with auth, plain HTTP) in a second one, a router namespace between them. This "
        "kernel has no `sch_netem`, so the router holds every packet for the one-way delay in a TUN delay "
        "line (a small C program the bench compiles) and `tbf` limits the rate each way on its egress veths "
        "(queue: 100 ms of the rate); offloads are off, frames are MTU-sized. The delay applies in both "
        "directions (RTT = 2 x delay; the measured TCP connect RTT is shown). *Sent up* / *down*: deltas of "
        "the client veth's `tx_bytes` / `rx_bytes` around each command (Ethernet frames; *sent up* includes "
        "the retransmissions of frames the bottleneck dropped); *delivered up*: what got past the bottleneck "
        "(the router's egress `tx_bytes`). Every `lifeboat` command is a fresh process: its wall time "
        "includes the interpreter start and the passphrase's KDF.",
        "",
        f"Images (`make_disk.py`, {mib(info['size_bytes'])}): the template (seed 1, "
        f"{mib(info['template_allocated_bytes'])} outside holes, {mib(info['template_zstd1_bytes'])} under "
        f"`zstd -1`); the clone = the template with `mutate --fraction {p['fraction']} --seed {CLONE_SEEDS[0]}` "
        f"({mib(info['clone1_changed_bytes'])} rewritten); the link-utilisation image (seed 2, "
        f"{mib(info['full_allocated_bytes'])} outside holes, {mib(info['full_zstd1_bytes'])} under `zstd -1`: "
        "partly compressible, as make_disk makes it).",
        "",
        "Clone dedup: repository A gets the template (full), `repo compact`, then the clone with a fresh node "
        "cache (cold); repository B the same template and compaction, then `repo info` on the template's "
        "node (loads the index into its cache) and the clone on that node (warm). restic: template backup, "
        "then the clone with a fresh cache (A) or the template backup's cache (B). *New* = what the run "
        "stored (Lifeboat `blocks_new`, `bytes_new_stored`; restic `data_added`, before its compression).",
        "",
    ]
    for link in res["summary"]["links"]:
        rate, delay = link["rate_mbit"], link["delay_ms"]
        c, u = link["clone"], link["util"]
        raw = next(x for x in res["runs"]["links"] if x["rate_mbit"] == rate and x["delay_ms"] == delay)
        out += [f"### {rate} Mbit/s, {delay} ms each way (TCP connect RTT {link['rtt_ms']:.0f} ms)", ""]
        tmpl_up = c["lifeboat"]["template"]["up_bytes"]
        rows = []
        for tool, keys, labels in (("lifeboat", LB_ROWS, ROW_LABELS), ("restic", RESTIC_ROWS, RESTIC_LABELS)):
            t_up = c[tool]["template"]["up_bytes"]
            for k in keys:
                x = c[tool][k]
                if tool == "lifeboat":
                    new = (
                        f"{x['blocks_new']:.0f} blocks, {mib(x['bytes_new_stored'])}"
                        if "blocks_new" in x
                        else ""
                    )
                else:
                    new = mib(x["data_added"])
                rows.append([
                    tool, labels[k], f"{x['seconds']:.1f} ({spread(x['seconds_all'])})",
                    mib(x["up_bytes"]), mib(x["up_delivered_bytes"]), f"{x['down_bytes'] / 1024:.0f} KiB", new,
                    f"{x['up_bytes'] / t_up:.3f}", f"{x['up_bytes'] / tmpl_up:.3f}",
                ])  # fmt: skip
        header = ["Tool", "Step", "Wall s (min-max)", "Sent up", "Delivered up", "Down", "New",
                  "Up / own template's", "Up / Lifeboat template's"]  # fmt: skip
        out += [table(header, rows), ""]
        r0 = raw["clone"][0]["lifeboat"]
        gen = r0["compact"]["report"]
        out += [
            f"Index after `repo compact`: {gen['entries']} entries in {gen['shards_total']} shard(s) "
            f"({gen['prefix_bits']} prefix bits). Node cache of the template's node after the compaction: "
            f"{r0['node_cache_after_compact']['by_folder']}; after `repo info`: "
            f"{r0['node_cache_after_info']['by_folder']}; the fresh cache after the cold clone run: "
            f"{r0['cache_after_cold']['by_folder']} ({r0['cache_after_cold']['bytes'] / 1024:.0f} KiB).",
            "",
            "Link utilisation: a full replication of the link-utilisation image into an empty prefix, by "
            "upload streams, and restic's backup of it. *Window* = the delivered rate while the middle 90% of "
            "the upload bytes got through (start-up, index and commit excluded); *wall* = delivered up bytes / "
            "the command's wall; *resent* = (sent - delivered) / delivered.",
            "",
        ]
        rows = []
        for key, x in u.items():
            rows.append([
                key.replace("streams-", "lifeboat --streams ") if key != "restic" else "restic (s3.connections=5)",
                f"{x['seconds']:.1f} ({spread(x['seconds_all'])})", mib(x["up_bytes"]), mib(x["up_delivered_bytes"]),
                f"{x['resent']:.1%}", mib(x["stored"]),
                f"{x['wall_mbit_s']:.1f} ({x['wall_util']:.0%})", f"{x['window_mbit_s']:.1f} ({x['window_util']:.0%})",
            ])  # fmt: skip
        header = ["Run", "Wall s (min-max)", "Sent up", "Delivered up", "Resent", "Stored",
                  "Wall Mbit/s (of link)", "Window Mbit/s (of link)"]  # fmt: skip
        out += [
            table(header, rows),
            "",
            table(["Ratio", "Value"], [[k, f"{v:.3f}"] for k, v in link["ratios"].items()]),
            "",
        ]
    out += ["### Notes", "", *[f"- {n}" for n in notes(res)], ""]
    out.append(END)
    return "\n".join(out)


def notes(res: dict[str, Any]) -> list[str]:
    info, links = res["images"], res["summary"]["links"]
    out = []
    for link in links:
        c, u, ra = link["clone"], link["util"], link["ratios"]
        lt, lc, lw = c["lifeboat"]["template"], c["lifeboat"]["clone_cold"], c["lifeboat"]["clone_warm"]
        rt, rc, rw = c["restic"]["template"], c["restic"]["clone_cold"], c["restic"]["clone_warm"]
        streams = [k for k in u if k.startswith("streams-")]
        out.append(
            f"{link['rate_mbit']} Mbit/s, {link['delay_ms']} ms, clone dedup: the clone costs Lifeboat "
            f"{mib(lc['up_bytes'])} up and {lc['down_bytes'] / 1024:.0f} KiB down with a cold cache "
            f"({ra['lifeboat clone cold: wire up / template full wire up']:.1%} of the template's own full "
            f"replication, {mib(lt['up_bytes'])}): {lc['blocks_new']:.0f} new 1 MiB blocks for "
            f"{mib(info['clone1_changed_bytes'])} rewritten in 64 KiB-aligned clusters. restic sends "
            f"{mib(rc['up_bytes'])} up and {rc['down_bytes'] / 1024:.0f} KiB down for the same clone "
            f"({ra['restic clone cold: wire up / template wire up']:.1%} of its template backup, "
            f"{mib(rt['up_bytes'])}); Lifeboat / restic on the wire {ra['lifeboat / restic, clone cold: wire up+down']:.2f}, "
            f"wall {lc['seconds']:.1f} s against {rc['seconds']:.1f} s (both read and hash the whole image). "
            f"Warm: Lifeboat {lw['down_bytes'] / 1024:.0f} KiB down, {lw['seconds']:.1f} s; restic "
            f"{rw['down_bytes'] / 1024:.0f} KiB down, {rw['seconds']:.1f} s."
        )
        out.append(
            f"{link['rate_mbit']} Mbit/s, {link['delay_ms']} ms, link utilisation (delivered, steady window): "
            + ", ".join(f"{k.split('-')[1]} stream(s) {u[k]['window_util']:.0%}" for k in streams)
            + f" of the link, restic {u['restic']['window_util']:.0%}; over the whole command "
            + ", ".join(f"{u[k]['wall_util']:.0%}" for k in streams)
            + f" (restic {u['restic']['wall_util']:.0%}): start-up (interpreter, KDF, listing, locks) and the "
            "commit are on the wall but not on the link. Resent (frames sent again after the bottleneck queue "
            "dropped them): "
            + ", ".join(f"{u[k]['resent']:.1%}" for k in streams)
            + f" (restic {u['restic']['resent']:.1%}). Delivered up / stored, full image: "
            f"{u[streams[0]]['up_delivered_bytes'] / u[streams[0]]['stored']:.3f} (HTTP, TCP/IP and Ethernet "
            "headers, locks, index, block map and point objects)."
        )
    r0 = res["runs"]["links"][0]["clone"][0]["lifeboat"]
    gen = r0["compact"]["report"]
    out.append(
        f"Index at this size: {gen['entries']} entries in {gen['shards_total']} shard(s) ({gen['prefix_bits']} "
        "prefix bits; a shard targets 4096 entries, ~190 KiB). So what a cold cache costs here is the "
        f"generation manifest and one small shard ({r0['cache_after_cold']['bytes'] / 1024:.0f} KiB): noise "
        "next to the clone's new data. It grows with the repository: one ~190 KiB shard per id prefix the "
        "clone's blocks touch, i.e. the whole index once a clone has more distinct blocks than there are "
        "shards, fetched once per node and then cached."
    )
    out.append(
        "The node that replicated the template and ran `repo compact` holds only the template's delta index "
        f"in its cache afterwards ({r0['node_cache_after_compact']['by_folder']}): compaction does not put "
        "the generation and shards it writes into the node cache, and the delta it merged (then deleted from "
        "the store) stays cached until evicted; so that node downloads its own freshly written shards at its "
        "next lookup. Here the warm case needed `repo info` to load the index first."
    )
    out.append(
        "Link emulation caveats: no netem in this kernel, so the delay is a userspace TUN delay line (about "
        "10% of a core at 100 Mbit/s, on a loaded machine: some jitter) and the rate a `tbf` with a 100 ms "
        "queue; no loss beyond that queue's drops. restic 0.14 (repository v2, zstd compression) uses 5 S3 "
        "connections by default; Lifeboat 4 upload streams unless `--streams` says otherwise."
    )
    return out


# --------------------------------------------------------------------------- main


def machine_info(work: Path) -> dict[str, str]:
    model, ram = cpu_and_ram()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": first_line(["git", "-C", str(ROOT), "describe", "--always", "--dirty"]),
        "nproc": first_line(["nproc"]),
        "CPU": model,
        "RAM": ram,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "weed": "SeaweedFS " + first_line(["weed", "version"]).split()[1],
        "restic": " ".join(first_line(["restic", "version"]).split()[:2]),
        "workdir filesystem": first_line(["stat", "-f", "-c", "%T", str(work)]),
        "load_start": loadavg(),
    }


def parse_links(text: str) -> list[tuple[int, int]]:
    try:
        links = [(int(a), int(b)) for a, b in (x.split(":") for x in text.split(","))]
    except ValueError as exc:
        raise BenchError(f"--links wants RATE_MBIT:DELAY_MS[,...], not {text!r}") from exc
    if not links or any(r < 1 or d < 0 for r, d in links):
        raise BenchError("--links: positive rates, delays ≥ 0")
    return links


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=None, help="image size in MiB (default 512)")
    p.add_argument("--runs", type=int, default=None, help="runs per link; medians (default 3)")
    p.add_argument("--links", default=None, help="RATE_MBIT:ONE_WAY_DELAY_MS,... (default 100:20,50:40)")
    p.add_argument("--streams", default="1,2,4,8", help="upload streams to compare (default 1,2,4,8)")
    p.add_argument("--fraction", type=float, default=0.02, help="share of the template each clone rewrites")
    p.add_argument("--smoke", action="store_true",
                   help="quick check: 64 MiB, 1 run, link 100:20; writes no doc unless --out is given")  # fmt: skip
    p.add_argument(
        "--out", type=Path, default=None, help=f"the Markdown document (default {DOC.relative_to(ROOT)})"
    )
    p.add_argument(
        "--json", type=Path, default=None, help=f"raw results (default {RESULTS_JSON.relative_to(ROOT)})"
    )
    p.add_argument("--workdir", type=Path, default=ROOT / "bench" / "work" / "wan")
    p.add_argument("--render-only", action="store_true", help="re-render --out from --json; run nothing")
    a = p.parse_args()
    size_mib = a.size_mib or (64 if a.smoke else 512)
    runs = a.runs or (1 if a.smoke else 3)
    links = parse_links(a.links or ("100:20" if a.smoke else "100:20,50:40"))
    streams = [int(s) for s in a.streams.split(",")]
    work = a.workdir.resolve()
    json_path = (a.json or (work.parent / "wan_smoke_results.json" if a.smoke else RESULTS_JSON)).resolve()
    out_doc = a.out if a.out is not None else (None if a.smoke else DOC)
    if a.render_only:
        res = json.loads(json_path.read_text())
        res["summary"] = (
            summarize(res["runs"] | {"params": res["params"]}) if "summary" not in res else res["summary"]
        )
        replace_section(out_doc or DOC, render(res), START, END)
        return
    if os.geteuid() != 0:
        raise BenchError("needs root (network namespaces, tc)")
    if runs < 1 or size_mib < 16 or not 0 < a.fraction < 0.5 or not streams or min(streams) < 1:
        raise BenchError("need --runs ≥ 1, --size-mib ≥ 16, 0 < --fraction < 0.5, streams ≥ 1")
    for tool in ("weed", "restic", "tc", "ip", "ethtool", "cc", "zstd"):
        if not shutil.which(tool):
            raise BenchError(f"{tool} not found on PATH")
    rmtree(work)
    work.mkdir(parents=True)
    machine = machine_info(work)
    bench = WanBench(work, size_mib, a.fraction, runs, streams)
    log(f"making the images ({size_mib} MiB)")
    images = bench.make_images()
    raw = bench.run(links)
    machine["load_end"] = loadavg()
    res: dict[str, Any] = {
        "machine": machine,
        "params": {
            "size_mib": size_mib,
            "runs": runs,
            "links": [list(x) for x in links],
            "streams": streams,
            "fraction": a.fraction,
            "workdir": os.path.relpath(work, ROOT),
            "json": os.path.relpath(json_path, ROOT),
            "total_minutes": (time.perf_counter() - T_START) / 60,
        },
        "images": images,
        "runs": raw,
    }
    res["summary"] = summarize(raw | {"params": res["params"]})
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(res, indent=2) + "\n")
    section = render(res)
    if out_doc is not None:
        replace_section(out_doc, section, START, END)
        log(f"wrote {out_doc} and {json_path}")
    else:
        print(section)
        log(f"wrote {json_path} (no document: --smoke without --out)")
    rmtree(work)


if __name__ == "__main__":
    main()
