"""`medsr-edge serve`: a DICOM node that receives studies (C-STORE), enhances each series when it is
complete and forwards the derived series (C-STORE), losing nothing.

- Every received instance is written atomically and fsynced before the success status goes back.
- The queue lives in SQLite beside the store (``queue.sqlite``): instances (received -> enhanced |
  failed | non-image), series (open -> done) and deliveries per destination (pending -> done). A
  restart after kill -9 resumes where it stopped; outputs have deterministic UIDs (the same as
  `enhance`), so a delivery repeated after a crash replaces, never duplicates, in the PACS.
- Enhancement runs in the node's worker thread with the same code as `enhance` (model chosen per
  Modality); forwarding retries with exponential backoff.
- The node answers every peer with a DICOM status and goes on: out of disk budget 0xA700, a
  dataset that cannot be parsed 0xC210, an unknown calling AE is rejected at association.

pynetdicom is an optional dependency: ``pip install 'medsr-edge[serve]'``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..core.errors import MedsrError, NotAnImage, first_line
from .pipeline import Job, enhance_file

log = logging.getLogger("medsr_edge.node")

STATUS_OK = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC210
RETRY_FIRST_S, RETRY_MAX_S = 2.0, 60.0  # forwarding backoff: 2, 4, 8 ... 60 s
FORWARD_BATCH = 64  # derived files sent per association and pass


@dataclass(frozen=True, kw_only=True)
class Destination:
    aet: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``AET@HOST:PORT``."""
        try:
            aet, rest = text.split("@", 1)
            host, port = rest.rsplit(":", 1)
            dest = cls(aet=aet, host=host, port=int(port))
        except ValueError:
            raise MedsrError(f"--forward {text!r}: use AET@HOST:PORT, e.g. PACS@10.0.0.5:104") from None
        if not 1 <= len(dest.aet) <= 16 or not 0 < dest.port < 65536:
            raise MedsrError(f"--forward {text!r}: the AE title is 1-16 characters and the port 1-65535")
        return dest

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"


@dataclass(kw_only=True)
class NodeConfig:
    """What the node is and does. Sizes in GB, times in seconds."""

    store: Path
    aet: str = "MEDSR"
    host: str = "0.0.0.0"
    port: int = 11112
    allow_aets: tuple[str, ...] = ()  # calling AE titles accepted; () = any
    allow_ips: tuple[str, ...] = ()  # peer addresses accepted; () = any
    forward: tuple[Destination, ...] = ()
    disk_budget_gb: float = 50.0
    series_idle_s: float = 10.0
    non_images: str = "forward"  # forward | drop: reports, plans ... in a study
    compress: str = "auto"
    enhancer_options: dict = field(default_factory=dict)  # model, device, threads ... (enhance's)
    tls_cert: Path | None = None  # PEM certificate of this node: associations come in over TLS only
    tls_key: Path | None = None  # its PEM private key (unencrypted)
    tls_ca: Path | None = None  # PEM CA bundle: peers must present a certificate it signed (mutual TLS)
    forward_tls_ca: Path | None = None  # PEM CA bundle: forward over TLS to destinations whose certificate it signed

    def __post_init__(self) -> None:
        if self.non_images not in ("forward", "drop"):
            raise MedsrError(f"--non-images {self.non_images!r}: use forward or drop")
        if self.series_idle_s <= 0 or self.disk_budget_gb <= 0:
            raise MedsrError("--series-idle and --disk-budget must be positive")
        if (self.tls_cert is None) != (self.tls_key is None) or (self.tls_ca is not None and self.tls_cert is None):
            raise MedsrError("TLS needs --tls-cert and --tls-key together (and --tls-ca only with them)")

    def ssl_context(self):
        """The server-side TLS context (TLS 1.2 or later), or None without --tls-cert. A file that
        cannot be read or a key that does not match its certificate is a one-line error."""
        if self.tls_cert is None:
            return None
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.tls_cert, self.tls_key)
            if self.tls_ca is not None:
                ctx.load_verify_locations(cafile=self.tls_ca)
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as exc:
            raise MedsrError(f"--tls-cert {self.tls_cert} / --tls-key {self.tls_key}"
                             f"{f' / --tls-ca {self.tls_ca}' if self.tls_ca else ''}: cannot be used "
                             f"({getattr(exc, 'strerror', None) or first_line(exc)}); give PEM files, the key "
                             "unencrypted and matching the certificate") from None
        return ctx

    def client_ssl_context(self):
        """The TLS context of outgoing associations (TLS 1.2 or later), or None without
        --forward-tls-ca. The destination's certificate must chain to that CA and name the
        --forward HOST (DNS name or IP address); with --tls-cert the node presents its certificate."""
        if self.forward_tls_ca is None:
            return None
        import ssl

        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_verify_locations(cafile=self.forward_tls_ca)
            if self.tls_cert is not None:
                ctx.load_cert_chain(self.tls_cert, self.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise MedsrError(f"--forward-tls-ca {self.forward_tls_ca}: cannot be used "
                             f"({getattr(exc, 'strerror', None) or first_line(exc)}); give a PEM CA bundle") from None
        return ctx


SCHEMA = """
CREATE TABLE IF NOT EXISTS instances (sop TEXT PRIMARY KEY, series TEXT, path TEXT, state TEXT,
  derived TEXT, error TEXT, received_at REAL);
CREATE TABLE IF NOT EXISTS series (uid TEXT PRIMARY KEY, last_at REAL, state TEXT);
CREATE TABLE IF NOT EXISTS deliveries (file TEXT, dest TEXT, state TEXT, attempts INTEGER DEFAULT 0,
  next_at REAL DEFAULT 0, error TEXT, PRIMARY KEY (file, dest));
"""


class Queue:
    """The node's state in SQLite (one connection per thread; WAL, so the SCP and the worker do not
    block each other)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        with self.db() as db:
            db.executescript(SCHEMA)

    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
        return conn

    def received(self, sop: str, series: str, path: Path) -> None:
        now = time.time()
        db = self.db()
        db.execute("INSERT INTO instances VALUES (?, ?, ?, 'received', NULL, NULL, ?) ON CONFLICT(sop) DO UPDATE SET "
                   "path=excluded.path, state='received', derived=NULL, error=NULL", (sop, series, str(path), now))
        db.execute("INSERT INTO series VALUES (?, ?, 'open') ON CONFLICT(uid) DO UPDATE SET last_at=excluded.last_at, "
                   "state='open'", (series, now))

    def counts(self) -> dict:
        db = self.db()
        return {"instances": dict(db.execute("SELECT state, COUNT(*) FROM instances GROUP BY state").fetchall()),
                "series": dict(db.execute("SELECT state, COUNT(*) FROM series GROUP BY state").fetchall()),
                "deliveries": dict(db.execute("SELECT state, COUNT(*) FROM deliveries GROUP BY state").fetchall()),
                "last_errors": [r[0] for r in db.execute(
                    "SELECT error FROM instances WHERE error IS NOT NULL UNION ALL "
                    "SELECT error FROM deliveries WHERE error IS NOT NULL LIMIT 5").fetchall()]}


def store_usage(store: Path) -> int:
    """Bytes of the files under ``store``."""
    total = 0
    for dirpath, _, files in os.walk(store):
        for f in files:
            try:
                total += os.stat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


class StoreUsage:
    """Bytes under the store, without a walk of the whole tree per C-STORE: counted once, then
    what the node writes is added, and the tree is walked again at most every ``rewalk_s``
    seconds (to see files an operator removed and the derived series written meanwhile)."""

    def __init__(self, store: Path, rewalk_s: float = 30.0) -> None:
        self.store, self.rewalk_s = store, rewalk_s
        self._lock = threading.Lock()
        self._bytes, self._at = store_usage(store), time.monotonic()

    def add(self, nbytes: int) -> None:
        with self._lock:
            self._bytes += nbytes

    def bytes(self) -> int:
        with self._lock:
            if time.monotonic() - self._at > self.rewalk_s:
                self._bytes, self._at = store_usage(self.store), time.monotonic()
            return self._bytes


def write_durably(path: Path, write) -> None:
    """``write(tmp)``, fsync the file, rename it onto ``path`` and fsync the folder: on disk before
    the peer hears success."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part")
    write(tmp)
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _safe(uid: str) -> str:
    return "".join(c for c in str(uid) if c.isdigit() or c == ".")[:64] or "unknown"


class Node:
    """The DICOM node: a Storage SCP, a worker that enhances complete series, a forwarder."""

    def __init__(self, cfg: NodeConfig) -> None:
        try:
            import pynetdicom  # noqa: F401
        except ImportError:
            raise MedsrError("serve needs pynetdicom: pip install 'medsr-edge[serve]'") from None
        self.cfg = cfg
        cfg.ssl_context(), cfg.client_ssl_context()  # a certificate that cannot be used: an error before anything listens
        cfg.store.mkdir(parents=True, exist_ok=True)
        self.queue = Queue(cfg.store / "queue.sqlite")
        self.usage = StoreUsage(cfg.store)
        self.stop = threading.Event()
        self.server = None
        self._chooser = None

    # ----------------------------------------------------------------------- receiving
    def handle_store(self, event) -> int:
        try:
            if self.usage.bytes() > self.cfg.disk_budget_gb * 1e9:
                log.warning("C-STORE refused: store over its %.3g GB budget", self.cfg.disk_budget_gb)
                return STATUS_OUT_OF_RESOURCES
            ds = event.dataset
            ds.file_meta = event.file_meta
            sop, series = str(ds.SOPInstanceUID), str(ds.get("SeriesInstanceUID", "") or "no-series")
        except Exception as exc:  # noqa: BLE001 - a dataset that does not parse: the peer hears so
            log.warning("C-STORE from %s not understood: %s", event.assoc.requestor.ae_title, first_line(exc))
            return STATUS_CANNOT_UNDERSTAND
        path = self.cfg.store / "incoming" / _safe(series) / f"{_safe(sop)}.dcm"
        try:
            write_durably(path, lambda tmp: ds.save_as(tmp, enforce_file_format=True))
        except OSError as exc:
            log.error("C-STORE %s: cannot write %s (%s)", sop, path, exc.strerror)
            return STATUS_OUT_OF_RESOURCES
        except Exception as exc:  # noqa: BLE001
            log.warning("C-STORE %s: cannot encode the dataset (%s)", sop, first_line(exc))
            return STATUS_CANNOT_UNDERSTAND
        self.usage.add(path.stat().st_size)
        self.queue.received(sop, series, path)
        log.info("received sop=%s series=%s from %s", sop, series, event.assoc.requestor.ae_title)
        return STATUS_OK

    def handle_requested(self, event) -> None:
        if self.cfg.allow_ips and event.assoc.requestor.address not in self.cfg.allow_ips:
            log.warning("association from %s refused: address not allowed", event.assoc.requestor.address)
            event.assoc.acse.send_reject(0x01, 0x01, 0x01)  # rejected-permanent, service user, no reason
            event.assoc.kill()

    def start_server(self) -> None:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.cfg.aet)
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        if self.cfg.allow_aets:
            ae.require_calling_aet = list(self.cfg.allow_aets)
        handlers = [(evt.EVT_C_STORE, self.handle_store), (evt.EVT_C_ECHO, lambda event: STATUS_OK),
                    (evt.EVT_REQUESTED, self.handle_requested)]
        tls = self.cfg.ssl_context()
        self.server = ae.start_server((self.cfg.host, self.cfg.port), block=False, evt_handlers=handlers,
                                      ssl_context=tls)
        log.info("listening as %s on %s:%d%s", self.cfg.aet, self.cfg.host, self.cfg.port,
                 " (TLS" + (", client certificates required)" if self.cfg.tls_ca else ")") if tls else "")

    # ----------------------------------------------------------------------- enhancing
    def chooser(self):
        if self._chooser is None:
            from .enhancer import Enhancer, ModelChooser

            opts = dict(self.cfg.enhancer_options)
            model = opts.pop("model", None)
            self._chooser = Enhancer(model, **opts) if model else ModelChooser(report=log.info, **opts)
        return self._chooser

    def enhance_ready_series(self) -> None:
        db = self.queue.db()
        ready = [r[0] for r in db.execute("SELECT uid FROM series WHERE state='open' AND last_at < ?",
                                          (time.time() - self.cfg.series_idle_s,)).fetchall()]
        for series in ready:
            rows = db.execute("SELECT sop, path FROM instances WHERE series=? AND state='received'", (series,)).fetchall()
            for sop, path in rows:
                self.enhance_instance(sop, Path(path))
            db.execute("UPDATE series SET state='done' WHERE uid=? AND last_at < ?", (series, time.time() - self.cfg.series_idle_s))

    def enhance_instance(self, sop: str, src: Path) -> None:
        db = self.queue.db()
        dst = self.cfg.store / "derived" / src.parent.name / src.name
        try:
            enhance_file(self.chooser(), Job(src, dst), overwrite=True, compress=self.cfg.compress)
        except NotAnImage as exc:
            db.execute("UPDATE instances SET state='non-image', error=? WHERE sop=?", (str(exc), sop))
            log.info("not an image sop=%s: %s", sop, exc)
            if self.cfg.non_images == "forward":
                self._queue_deliveries(src)
            return
        except MedsrError as exc:
            db.execute("UPDATE instances SET state='failed', error=? WHERE sop=?", (str(exc), sop))
            log.warning("enhance failed sop=%s: %s", sop, exc)
            return
        self.usage.add(dst.stat().st_size)
        db.execute("UPDATE instances SET state='enhanced', derived=? WHERE sop=?", (str(dst), sop))
        self._queue_deliveries(dst)

    def _queue_deliveries(self, file: Path) -> None:
        db = self.queue.db()
        for dest in self.cfg.forward:
            db.execute("INSERT OR IGNORE INTO deliveries (file, dest, state) VALUES (?, ?, 'pending')", (str(file), str(dest)))

    # ----------------------------------------------------------------------- forwarding
    def forward_pending(self) -> None:
        import pydicom
        from pynetdicom import AE

        db = self.queue.db()
        for dest in self.cfg.forward:
            rows = db.execute("SELECT file, attempts FROM deliveries WHERE dest=? AND state='pending' AND next_at <= ?",
                              (str(dest), time.time())).fetchall()
            if not rows:
                continue
            # Headers only (no pixel data), and at most FORWARD_BATCH files per association: each
            # file is read again as it is sent, so memory holds one derived instance, not the series.
            headers = [(f, a, pydicom.dcmread(f, stop_before_pixels=True)) for f, a in rows[:FORWARD_BATCH]]
            ae = AE(ae_title=self.cfg.aet)
            for sop_class, ts in {(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for _, _, ds in headers}:
                ae.add_requested_context(sop_class, ts)
            tls = self.cfg.client_ssl_context()
            assoc = ae.associate(dest.host, dest.port, ae_title=dest.aet, tls_args=(tls, dest.host) if tls else None)
            for f, attempts, ds in headers:
                error = None
                if assoc.is_established:
                    status = assoc.send_c_store(pydicom.dcmread(f))
                    code = getattr(status, "Status", None)
                    if code in (0x0000, 0xB000, 0xB007, 0xB006):  # success or warning: stored
                        db.execute("UPDATE deliveries SET state='done', error=NULL WHERE file=? AND dest=?", (f, str(dest)))
                        log.info("forwarded sop=%s to %s", ds.SOPInstanceUID, dest)
                        continue
                    error = f"status 0x{code:04X}" if code is not None else "no response"
                else:
                    error = "association failed"
                wait = min(RETRY_FIRST_S * 2 ** attempts, RETRY_MAX_S)
                db.execute("UPDATE deliveries SET attempts=attempts+1, next_at=?, error=? WHERE file=? AND dest=?",
                           (time.time() + wait, f"{dest}: {error}", f, str(dest)))
                log.warning("forward sop=%s to %s: %s; retry in %.0f s", ds.SOPInstanceUID, dest, error, wait)
            if assoc.is_established:
                assoc.release()

    # ----------------------------------------------------------------------- running
    def resume(self) -> None:
        """After a crash: instances still 'received' belong to series that will be enhanced again
        once idle (their series reopen), so nothing received is lost."""
        db = self.queue.db()
        db.execute("UPDATE series SET state='open' WHERE uid IN (SELECT series FROM instances WHERE state='received')")

    def run(self, poll_s: float = 0.5) -> None:
        self.resume()
        self.start_server()
        try:
            while not self.stop.is_set():
                try:
                    self.enhance_ready_series()
                    self.forward_pending()
                except Exception as exc:  # noqa: BLE001 - the node keeps serving; the error is logged
                    log.error("worker: %s", first_line(exc))
                self.stop.wait(poll_s)
        finally:
            if self.server is not None:
                self.server.shutdown()
