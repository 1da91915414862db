"""Load on `medsr-edge serve`: N slices of 512x512 CT sent in one association by dcmtk's storescu,
enhanced, and forwarded to an Orthanc started here. Reports received/s, enhanced slices/min,
slices/min end to end (first byte sent to the last derived instance in the PACS), whether it answers a C-ECHO while enhancing, the node's peak RSS (VmHWM) and the
machine's load (other work on the same cores lowers the rates).

    python benchmarks/serve_load.py --slices 500 --threads 2 --json docs/serve-load.json

Needs Orthanc and dcmtk (apt-get install orthanc dcmtk) and pynetdicom. The slices are copies of
pydicom-data's 693_UNCR.dcm, each with its own SOP Instance UID; no patient data.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from test_serve import CLI, ECHOSCU, STORESCU, OrthancServer, free_port, wait  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import make_series  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=500)
    ap.add_argument("--model", default="student-x4")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        series = tmp / "series"
        series.mkdir()
        make_series(series, a.slices)
        pacs = OrthancServer(tmp / "orthanc")
        pacs.start()
        port = free_port()
        store = tmp / "store"
        node = subprocess.Popen([*CLI, "serve", "--store", str(store), "--port", str(port), "--host", "127.0.0.1",
                                 "--forward", f"ORTHANC@127.0.0.1:{pacs.dicom_port}", "--series-idle", "1",
                                 "--model", a.model, "--threads", str(a.threads), "--quiet"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait(lambda: subprocess.run([ECHOSCU, "-aec", "MEDSR", "127.0.0.1", str(port)], capture_output=True).returncode == 0,
                 60, "the node")
            t0 = time.time()
            subprocess.run([STORESCU, "-aec", "MEDSR", "127.0.0.1", str(port), *sorted(map(str, series.iterdir()))],
                           check=True, capture_output=True)
            t_recv = time.time() - t0

            def status():
                out = subprocess.run([*CLI, "serve", "--store", str(store), "--status"], capture_output=True, text=True)
                return json.loads(out.stdout)

            # The node keeps answering while it enhances: a C-ECHO once the first slices are done.
            wait(lambda: status()["instances"].get("enhanced", 0) > 0, 3600, "enhancement to start")
            t_echo = time.time()
            echo_ok = subprocess.run([ECHOSCU, "-aec", "MEDSR", "127.0.0.1", str(port)], capture_output=True).returncode == 0
            echo_s = time.time() - t_echo
            wait(lambda: status()["instances"].get("enhanced", 0) >= a.slices, 24 * 3600, "enhancement")
            t_enh = time.time() - t0
            wait(lambda: len(pacs.get("/instances")) >= a.slices, 3600, "forwarding")
            t_fwd = time.time() - t0
            row = {"slices": a.slices, "model": a.model, "threads": a.threads,
                   "received_per_s": round(a.slices / t_recv, 1), "enhanced_slices_per_min": round(60 * a.slices / (t_enh - t_recv), 1),
                   "end_to_end_slices_per_min": round(60 * a.slices / t_fwd, 1),
                   "seconds": {"receive": round(t_recv, 1), "all_enhanced": round(t_enh, 1), "all_forwarded": round(t_fwd, 1)},
                   "c_echo_while_enhancing": {"answered": echo_ok, "seconds": round(echo_s, 2)},
                   "node_peak_rss_mb": round(peak_rss_mb(node.pid)),
                   "machine": {"cpus": os.cpu_count(), "load_average_1min_at_end": round(os.getloadavg()[0], 2)}}
        finally:
            node.send_signal(signal.SIGTERM)
            node.wait(60)
            pacs.stop()
    print(json.dumps(row, indent=1))
    if a.json:
        a.json.write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
