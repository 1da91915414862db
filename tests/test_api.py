"""The Python API the README shows: read a series, enhance it, write a derived series."""

from pathlib import Path

import pydicom

from medsr_edge.runtime import Enhancer, read_image, run_batch, write_derived_dicom


def test_read_enhance_write_a_series(tmp_path, ct_small, tiny_onnx):
    series = tmp_path / "series"
    series.mkdir()
    for i in range(2):
        ds = pydicom.dcmread(ct_small)
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = i + 1
        ds.save_as(series / f"IM000{i + 1}")
    enh = Enhancer(tiny_onnx)
    image = read_image(series / "IM0001")
    out = tmp_path / "out" / "IM0001.dcm"
    write_derived_dicom(out, image, enh.iter_enhance_image(image), enh.scale, enh.describe(),
                        identity=enh.identity, series_label=enh.model_name)
    one = pydicom.dcmread(out)
    summary = run_batch(enh, [series], output=tmp_path / "batch", report=lambda line: None)
    assert len(summary.enhanced) == 2 and summary.failed == 0
    batch = [pydicom.dcmread(dst) for _, dst in summary.enhanced]
    assert {d.SeriesInstanceUID for d in batch} == {one.SeriesInstanceUID}  # same model, same source series
    assert (one.Rows, one.Columns) == (512, 512)
    assert Path(summary.enhanced[0][1]).parent == tmp_path / "batch"
