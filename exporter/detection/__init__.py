"""The local detection trainer (`edge-export train` on a COCO set): needs the `train` extra (PyTorch CPU).

    backbone.py  EfficientNet-Lite0 in PyTorch, its weights read from the demo export's ONNX
    augment.py   training pictures at the network's size, boxes moved with the pixels; anchors
    model.py     the detector (frozen trunk, fine-tuned top, two-scale neck, YOLOv2 output) and its loss
    train.py     the recipe, the ONNX export in the Custom Vision compact detection layout, held-out figures

Only train.py's `require_torch` and `train_detector` are used from outside; torch is imported
when a detector is trained, so the rest of the exporter runs without it.
"""
