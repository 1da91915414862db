"""`medsr-edge serve` against real components started here: Orthanc as the destination PACS (checked
through its REST API) and dcmtk's storescu/echoscu as the modality. Skipped with the reason where
they are not installed (apt-get install orthanc dcmtk; pip install pynetdicom)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

pytest.importorskip("pynetdicom", reason="pip install 'medsr-edge[serve]'")
ORTHANC = shutil.which("Orthanc")


def dcmtk(name: str) -> str | None:
    """dcmtk's ``name`` on PATH, not pynetdicom's Python apps of the same name (venv/bin/storescu)."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        exe = Path(folder) / name
        try:
            if exe.is_file() and os.access(exe, os.X_OK) and exe.read_bytes()[:2] != b"#!":
                return str(exe)
        except OSError:
            continue
    return None


STORESCU, ECHOSCU = dcmtk("storescu"), dcmtk("echoscu")
pytestmark = pytest.mark.skipif(not (ORTHANC and STORESCU and ECHOSCU),
                                reason="needs Orthanc and dcmtk: apt-get install orthanc dcmtk")
CLI = [sys.executable, "-m", "medsr_edge.cli.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(cond, timeout: float, what: str):
    end = time.time() + timeout
    while time.time() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class OrthancServer:
    def __init__(self, folder: Path, tls: dict | None = None) -> None:
        """``tls``: Orthanc's DICOM TLS keys (DicomTlsCertificate ...): its DICOM port is then TLS only."""
        self.dicom_port, self.http_port = free_port(), free_port()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "orthanc.json").write_text(json.dumps({
            "Name": "test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
            "DicomAet": "ORTHANC", "DicomPort": self.dicom_port, "HttpPort": self.http_port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
            "Plugins": [], "HttpServerEnabled": True, "DicomServerEnabled": True,
            **({"DicomTlsEnabled": True, **tls} if tls else {})}))
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen([ORTHANC, str(self.folder / "orthanc.json")], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait(lambda: self._ok("/system"), 60, "Orthanc to start")

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None

    def _ok(self, path):
        try:
            return self.get(path)
        except OSError:
            return None

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=5) as r:
            return json.loads(r.read())


@pytest.fixture
def orthanc(tmp_path):
    server = OrthancServer(tmp_path / "orthanc")
    server.start()
    yield server
    server.stop()


class NodeProc:
    def __init__(self, tmp_path: Path, model: Path, dest, *extra: str) -> None:
        self.port = free_port()
        self.store = tmp_path / "store"
        self.args = [*CLI, "serve", "--store", str(self.store), "--aet", "MEDSR", "--port", str(self.port),
                     "--host", "127.0.0.1", "--allow-aet", "MODALITY", "--forward", f"ORTHANC@127.0.0.1:{dest.dicom_port}",
                     "--series-idle", "2", "--model", str(model), "--threads", "1", *extra]
        self.log = tmp_path / "node.log"
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        wait(lambda: subprocess.run([ECHOSCU, "-aet", "MODALITY", "-aec", "MEDSR", "127.0.0.1", str(self.port)],
                                    capture_output=True).returncode == 0, 60, "the node to answer C-ECHO")

    def kill(self, sig=signal.SIGKILL) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(30)

    def status(self) -> dict:
        out = subprocess.run([*CLI, "serve", "--store", str(self.store), "--status"], capture_output=True, text=True)
        return json.loads(out.stdout)


def study(folder: Path, n_ct: int = 3, n_mr: int = 2) -> list[Path]:
    """A two-series study: CT and MR test images of pydicom, one study UID, fresh instance UIDs."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid, files = generate_uid(), []
    for name, n in (("CT_small.dcm", n_ct), ("MR_small.dcm", n_mr)):
        series = generate_uid()
        for i in range(n):
            ds = pydicom.dcmread(get_testdata_file(name))
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, series, generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.InstanceNumber = i + 1
            files.append(folder / f"{name[:2]}{i}.dcm")
            ds.save_as(files[-1])
    return files


def send(files, port, aet="MODALITY"):
    return subprocess.run([STORESCU, "-v", "-aet", aet, "-aec", "MEDSR", "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True)


def derived_series(orthanc):
    """{Orthanc series id: SeriesDescription}."""
    return {sid: orthanc.get(f"/series/{sid}")["MainDicomTags"].get("SeriesDescription", "") for sid in orthanc.get("/series")}


def test_a_study_arrives_enhanced_and_an_unknown_ae_is_rejected(tmp_path, orthanc, tiny_onnx):
    node = NodeProc(tmp_path, tiny_onnx, orthanc)
    node.start()
    try:
        assert send(study(tmp_path / "in"), node.port).returncode == 0
        wait(lambda: len(orthanc.get("/instances")) == 5, 120, "5 derived instances in Orthanc")
        series = derived_series(orthanc)
        assert len(series) == 2 and all("[SR x4" in d for d in series.values())
        one = orthanc.get(f"/instances/{orthanc.get('/instances')[0]}/simplified-tags")
        assert int(one["Rows"]) in (512, 256)  # CT 128 and MR 64, x4
        bad = send(study(tmp_path / "evil", 1, 0), node.port, aet="EVIL")
        assert bad.returncode != 0 and "Association Rejected" in bad.stdout + bad.stderr
        assert node.status()["deliveries"] == {"done": 5}
    finally:
        node.kill(signal.SIGTERM)


def test_kill_9_mid_series_then_restart_delivers_every_instance_once(tmp_path, orthanc, tiny_onnx):
    node = NodeProc(tmp_path, tiny_onnx, orthanc)
    node.start()
    files = study(tmp_path / "in", 4, 0)
    assert send(files[:2], node.port).returncode == 0
    node.kill()  # kill -9 before the series is complete
    node.start()
    try:
        assert send(files[2:], node.port).returncode == 0
        wait(lambda: len(orthanc.get("/instances")) == 4, 120, "4 derived instances")
        time.sleep(3)
        assert len(orthanc.get("/instances")) == 4  # each SOP Instance UID once
        assert node.status()["deliveries"] == {"done": 4}
    finally:
        node.kill(signal.SIGTERM)


def test_destination_down_then_up_is_retried_and_delivered(tmp_path, tiny_onnx):
    dest = OrthancServer(tmp_path / "orthanc")  # not started yet
    node = NodeProc(tmp_path, tiny_onnx, dest)
    node.start()
    try:
        assert send(study(tmp_path / "in", 2, 0), node.port).returncode == 0
        wait(lambda: node.status()["deliveries"].get("pending"), 60, "deliveries to wait for the PACS")
        time.sleep(8)  # the PACS stays down; the node retries with backoff
        dest.start()
        wait(lambda: len(dest.get("/instances")) == 2, 120, "delivery once the PACS is up")
    finally:
        node.kill(signal.SIGTERM)
        dest.stop()


def test_a_corrupt_instance_is_stored_reported_and_the_rest_delivered(tmp_path, orthanc, tiny_onnx):
    node = NodeProc(tmp_path, tiny_onnx, orthanc)
    node.start()
    try:
        files = study(tmp_path / "in", 3, 0)
        ds = pydicom.dcmread(files[1])
        ds.RescaleSlope = "0"  # parses, but no image can be made of it
        ds.save_as(files[1])
        assert send(files, node.port).returncode == 0
        wait(lambda: len(orthanc.get("/instances")) == 2, 120, "the 2 good instances")
        st = wait(lambda: node.status() if node.status()["instances"].get("failed") else None, 30, "the failure")
        assert st["instances"] == {"enhanced": 2, "failed": 1} and "RescaleSlope" in " ".join(st["last_errors"])
        assert len(list((node.store / "incoming").rglob("*.dcm"))) == 3  # the corrupt one is kept
    finally:
        node.kill(signal.SIGTERM)


def test_disk_budget_reached_gives_out_of_resources_and_the_node_goes_on(tmp_path, orthanc, tiny_onnx):
    node = NodeProc(tmp_path, tiny_onnx, orthanc, "--disk-budget", "0.00001")  # 10 kB
    node.start()
    try:
        res = send(study(tmp_path / "in", 3, 0), node.port)
        said = (res.stdout + res.stderr).lower()
        assert "a700" in said or "outofresources" in said.replace(" ", ""), said[-1500:]
        assert not list((node.store / "incoming").rglob("*.dcm"))
        echo = subprocess.run([ECHOSCU, "-aet", "MODALITY", "-aec", "MEDSR", "127.0.0.1", str(node.port)])
        assert echo.returncode == 0 and node.proc.poll() is None
    finally:
        node.kill(signal.SIGTERM)


def test_bad_peers_get_an_answer_and_the_node_goes_on(tmp_path, orthanc, tiny_onnx):
    node = NodeProc(tmp_path, tiny_onnx, orthanc)
    node.start()
    try:
        for payload in (b"GET / HTTP/1.1\r\n\r\n", bytes(range(256)) * 4,
                        b"\x01\x00\xff\xff\xff\xff" + b"\x00" * 64):  # an A-ASSOCIATE-RQ claiming 4 GiB
            with socket.create_connection(("127.0.0.1", node.port), timeout=10) as s:
                s.sendall(payload)
                s.settimeout(10)
                try:
                    s.recv(1024)
                except (TimeoutError, OSError):
                    pass
        private = tmp_path / "private.dcm"
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.3.4.5.6.7"  # a storage class nobody knows
        ds.save_as(private)
        res = send([private], node.port)
        assert res.returncode != 0 or "no presentation context" in (res.stdout + res.stderr).lower()
        assert node.proc.poll() is None
        assert subprocess.run([ECHOSCU, "-aet", "MODALITY", "-aec", "MEDSR", "127.0.0.1", str(node.port)]).returncode == 0
        assert not list((node.store / "incoming").rglob("*.dcm")) if (node.store / "incoming").exists() else True
    finally:
        node.kill(signal.SIGTERM)


def test_an_address_outside_the_allow_list_is_refused(tmp_path, orthanc, tiny_onnx):
    node = NodeProc(tmp_path, tiny_onnx, orthanc, "--allow-ip", "10.9.9.9")
    node.proc = subprocess.Popen(node.args, stdout=open(node.log, "ab"), stderr=subprocess.STDOUT)
    try:
        time.sleep(1)
        wait(lambda: "listening" in node.log.read_text(), 60, "the node to listen")
        echo = subprocess.run([ECHOSCU, "-aet", "MODALITY", "-aec", "MEDSR", "127.0.0.1", str(node.port)],
                              capture_output=True, text=True)
        assert echo.returncode != 0
        assert "address not allowed" in node.log.read_text()
    finally:
        node.kill(signal.SIGTERM)


def _pki(folder: Path) -> dict[str, Path]:
    """A throwaway CA, and a node, a modality and a PACS certificate it signed (openssl, 1 day; the
    PACS's names 127.0.0.1, as a client checking its destination requires)."""
    folder.mkdir(parents=True, exist_ok=True)
    f = {n: folder / n for n in ("ca.key", "ca.crt", "node.key", "node.crt", "mod.key", "mod.crt")}

    def ssl(*args):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test CA",
        "-keyout", f["ca.key"], "-out", f["ca.crt"])
    san = folder / "san.ext"
    san.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for who, cn in (("node", "localhost"), ("mod", "MODALITY"), ("pacs", "localhost")):
        f[f"{who}.key"], f[f"{who}.crt"] = folder / f"{who}.key", folder / f"{who}.crt"
        csr = folder / f"{who}.csr"
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", f[f"{who}.key"], "-out", csr)
        ssl("x509", "-req", "-in", csr, "-CA", f["ca.crt"], "-CAkey", f["ca.key"], "-CAcreateserial", "-days", "1",
            "-out", f[f"{who}.crt"], *(("-extfile", san) if who == "pacs" else ()))
    return f


def _send_two_over_tls(tmp_path: Path, tls: list[str], node, pacs) -> None:
    """storescu sends two CT slices to the node over TLS; both derived instances reach ``pacs``."""
    files = study(tmp_path / "in", 2, 0)
    res = subprocess.run([STORESCU, *tls, "-aet", "MODALITY", "-aec", "MEDSR", "127.0.0.1", str(node.port),
                          *map(str, files)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    wait(lambda: len(pacs.get("/instances")) == 2, 120, "2 derived instances in Orthanc")
    assert node.proc.poll() is None


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl to make test certificates")
def test_tls_with_client_certificates_only(tmp_path, orthanc, tiny_onnx):
    pki = _pki(tmp_path / "pki")
    node = NodeProc(tmp_path, tiny_onnx, orthanc, "--tls-cert", str(pki["node.crt"]), "--tls-key", str(pki["node.key"]),
                    "--tls-ca", str(pki["ca.crt"]))
    tls = ["+tls", str(pki["mod.key"]), str(pki["mod.crt"]), "+cf", str(pki["ca.crt"])]
    node.proc = subprocess.Popen(node.args, stdout=open(node.log, "ab"), stderr=subprocess.STDOUT)
    try:
        wait(lambda: "listening" in node.log.read_text(), 60, "the node to listen")
        assert "(TLS, client certificates required)" in node.log.read_text()
        echo = [ECHOSCU, "-aet", "MODALITY", "-aec", "MEDSR"]
        assert subprocess.run([*echo, *tls, "127.0.0.1", str(node.port)], capture_output=True).returncode == 0
        plain = subprocess.run([*echo, "127.0.0.1", str(node.port)], capture_output=True, timeout=60)
        no_cert = subprocess.run([*echo, "+tla", "+cf", str(pki["ca.crt"]), "127.0.0.1", str(node.port)],
                                 capture_output=True, timeout=60)
        assert plain.returncode != 0 and no_cert.returncode != 0  # no TLS, or TLS without a certificate: refused
        _send_two_over_tls(tmp_path, tls, node, orthanc)
    finally:
        node.kill(signal.SIGTERM)


@pytest.mark.skipif(not shutil.which("openssl"), reason="needs openssl to make test certificates")
def test_tls_both_ways_modality_to_node_to_a_tls_only_pacs(tmp_path, tiny_onnx):
    """The modality sends over TLS, the node forwards over TLS (--forward-tls-ca) to an Orthanc
    that takes TLS only and requires the node's certificate; a CA file that is not PEM is a one-line
    error before the node listens."""
    pki = _pki(tmp_path / "pki")
    pacs = OrthancServer(tmp_path / "orthanc-tls", tls={
        "DicomTlsCertificate": str(pki["pacs.crt"]), "DicomTlsPrivateKey": str(pki["pacs.key"]),
        "DicomTlsTrustedCertificates": str(pki["ca.crt"]), "DicomTlsRemoteCertificateRequired": True})
    pacs.start()
    tls = ["+tls", str(pki["mod.key"]), str(pki["mod.crt"]), "+cf", str(pki["ca.crt"])]
    node = NodeProc(tmp_path, tiny_onnx, pacs, "--tls-cert", str(pki["node.crt"]), "--tls-key", str(pki["node.key"]),
                    "--forward-tls-ca", str(pki["ca.crt"]))
    node.proc = subprocess.Popen(node.args, stdout=open(node.log, "ab"), stderr=subprocess.STDOUT)
    try:
        wait(lambda: "listening" in node.log.read_text(), 60, "the node to listen")
        _send_two_over_tls(tmp_path, tls, node, pacs)
    finally:
        node.kill(signal.SIGTERM)
        pacs.stop()
    res = subprocess.run([*CLI, "serve", "--store", str(tmp_path / "s2"), "--model", str(tiny_onnx),
                          "--forward-tls-ca", str(tiny_onnx)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--forward-tls-ca" in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_a_key_that_does_not_fit_is_one_line_before_listening(tmp_path, tiny_onnx):
    bad = tmp_path / "not-a-cert.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnonsense\n-----END CERTIFICATE-----\n")
    res = subprocess.run([*CLI, "serve", "--store", str(tmp_path / "s"), "--port", str(free_port()), "--model",
                          str(tiny_onnx), "--tls-cert", str(bad), "--tls-key", str(bad)], capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert f"--tls-cert {bad}" in res.stderr and "give PEM files" in res.stderr
    res = subprocess.run([*CLI, "serve", "--store", str(tmp_path / "s"), "--model", str(tiny_onnx), "--tls-cert", str(bad)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "--tls-cert and --tls-key together" in res.stderr


def test_forwarding_holds_one_instance_and_a_bounded_pass(tmp_path, orthanc, monkeypatch):
    """Memory of forwarding is bounded whatever the backlog: one pass sends at most FORWARD_BATCH
    files on one association, and a derived instance's pixel data is read as it is sent, never the
    pass's files together (a 500-slice series once took 4.7 GB)."""
    import weakref

    from medsr_edge.runtime import node as node_mod

    derived = study(tmp_path / "derived", 7, 0)
    monkeypatch.setattr(node_mod, "FORWARD_BATCH", 3)
    node = node_mod.Node(node_mod.NodeConfig(store=tmp_path / "store", aet="MEDSR",
                                             forward=(node_mod.Destination.parse(f"ORTHANC@127.0.0.1:{orthanc.dicom_port}"),)))
    for f in derived:
        node._queue_deliveries(f)
    full: list[weakref.ref] = []  # every full read; alive = not yet freed
    most_alive = [0]
    read = pydicom.dcmread

    def counting_read(path, *args, **kwargs):
        ds = read(path, *args, **kwargs)
        if not kwargs.get("stop_before_pixels"):
            full.append(weakref.ref(ds))
            most_alive[0] = max(most_alive[0], sum(r() is not None for r in full))
        return ds

    monkeypatch.setattr(pydicom, "dcmread", counting_read)
    node.forward_pending()
    assert len(orthanc.get("/instances")) == 3 and node.queue.counts()["deliveries"] == {"done": 3, "pending": 4}
    assert most_alive[0] == 1  # each instance with its pixels is released before the next is read
    node.forward_pending()
    node.forward_pending()
    assert len(orthanc.get("/instances")) == 7 and node.queue.counts()["deliveries"] == {"done": 7}
