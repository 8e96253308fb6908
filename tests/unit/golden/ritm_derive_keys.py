"""Derive the state-dict keys and shapes of RITM's HRNet-OCR models from the published architecture.

This is a second, independent reading of RITM's code (``isegm/model/is_model.py``,
``is_hrnet_model.py``, ``modeling/hrnet_ocr.py``, ``modeling/ocr.py``,
``modeling/resnetv1b.py``, configured as in ``models/iter_mask/hrnet*_cocolvis_itermask_3p.py``):
it enumerates names the way those constructors register them, without building any module.
The committed ``ritm_hrnet_keys_<variant>.json`` files are its output; the unit tests compare
clickmask's modules against them. Regenerate with::

    python tests/unit/golden/ritm_derive_keys.py
"""

from __future__ import annotations

import json
import pathlib

VARIANTS = {  # name: (width, ocr_width, small)
    "ritm-hrnet18s": (18, 48, True),
    "ritm-hrnet18": (18, 64, False),
    "ritm-hrnet32": (32, 128, False),
}


def derive(width: int, ocr_width: int, small: bool) -> list[tuple[str, list[int]]]:
    keys: list[tuple[str, list[int]]] = []

    def conv(name, cout, cin, k, bias=False):
        keys.append((f"{name}.weight", [cout, cin, k, k]))
        if bias:
            keys.append((f"{name}.bias", [cout]))

    def bn(name, c):
        keys.extend([(f"{name}.weight", [c]), (f"{name}.bias", [c]), (f"{name}.running_mean", [c]),
                     (f"{name}.running_var", [c]), (f"{name}.num_batches_tracked", [])])

    # ISModel.__init__ (use_rgb_conv=False, with_prev_mask=True): maps_transform = Sequential(
    #   Conv2d(3, 16, 1), LeakyReLU, Conv2d(16, 64, 3, stride 2), ScaleLayer) -> indices 0, 2, 3.
    conv("maps_transform.0", 16, 3, 1, bias=True)
    conv("maps_transform.2", 64, 16, 3, bias=True)
    keys.append(("maps_transform.3.scale", [1]))

    fe = "feature_extractor"
    nb = 2 if small else 4
    conv(f"{fe}.conv1", 64, 3, 3)
    bn(f"{fe}.bn1", 64)
    conv(f"{fe}.conv2", 64, 64, 3)
    bn(f"{fe}.bn2", 64)
    # layer1: BottleneckV1b(64 -> 64 -> 256) x nb, downsample on the first.
    for b in range(nb):
        p = f"{fe}.layer1.{b}"
        cin = 64 if b == 0 else 256
        conv(f"{p}.conv1", 64, cin, 1)
        bn(f"{p}.bn1", 64)
        conv(f"{p}.conv2", 64, 64, 3)
        bn(f"{p}.bn2", 64)
        conv(f"{p}.conv3", 256, 64, 1)
        bn(f"{p}.bn3", 256)
        if b == 0:
            conv(f"{p}.downsample.0", 256, 64, 1)
            bn(f"{p}.downsample.1", 256)

    pre = [256]
    stage_modules = {2: 1, 3: 3 if small else 4, 4: 2 if small else 3}
    for stage in (2, 3, 4):
        cur = [width * 2 ** i for i in range(stage)]
        t = f"{fe}.transition{stage - 1}"
        for i, c in enumerate(cur):
            if i < len(pre):
                if pre[i] != c:  # Sequential(conv3x3, BN, ReLU); None otherwise
                    conv(f"{t}.{i}.0", c, pre[i], 3)
                    bn(f"{t}.{i}.1", c)
            else:  # Sequential of Sequential(conv3x3 s2, BN, ReLU)
                for j in range(i + 1 - len(pre)):
                    cout = c if j == i - len(pre) else pre[-1]
                    conv(f"{t}.{i}.{j}.0", cout, pre[-1], 3)
                    bn(f"{t}.{i}.{j}.1", cout)
        for m in range(stage_modules[stage]):
            s = f"{fe}.stage{stage}.{m}"
            for br, c in enumerate(cur):  # BasicBlockV1b x nb per branch, no downsample
                for b in range(nb):
                    p = f"{s}.branches.{br}.{b}"
                    conv(f"{p}.conv1", c, c, 3)
                    bn(f"{p}.bn1", c)
                    conv(f"{p}.conv2", c, c, 3)
                    bn(f"{p}.bn2", c)
            for i in range(len(cur)):  # fuse_layers[i][j]
                for j in range(len(cur)):
                    f = f"{s}.fuse_layers.{i}.{j}"
                    if j > i:
                        conv(f"{f}.0", cur[i], cur[j], 1)
                        bn(f"{f}.1", cur[i])
                    elif j < i:
                        for k in range(i - j):
                            cout = cur[i] if k == i - j - 1 else cur[j]
                            conv(f"{f}.{k}.0", cout, cur[j], 3)
                            bn(f"{f}.{k}.1", cout)
        pre = cur

    last = sum(pre)
    mid, key = 2 * ocr_width, ocr_width
    conv(f"{fe}.conv3x3_ocr.0", mid, last, 3, bias=True)
    bn(f"{fe}.conv3x3_ocr.1", mid)
    ocb = f"{fe}.ocr_distri_head.object_context_block"
    for name in ("f_pixel", "f_object"):
        conv(f"{ocb}.{name}.0", key, mid, 1)
        bn(f"{ocb}.{name}.1.0", key)
        conv(f"{ocb}.{name}.2", key, key, 1)
        bn(f"{ocb}.{name}.3.0", key)
    conv(f"{ocb}.f_down.0", key, mid, 1)
    bn(f"{ocb}.f_down.1.0", key)
    conv(f"{ocb}.f_up.0", mid, key, 1)
    bn(f"{ocb}.f_up.1.0", mid)
    conv(f"{fe}.ocr_distri_head.conv_bn_dropout.0", mid, 2 * mid, 1)
    bn(f"{fe}.ocr_distri_head.conv_bn_dropout.1.0", mid)
    conv(f"{fe}.cls_head", 1, mid, 1, bias=True)
    conv(f"{fe}.aux_head.0", last, last, 1, bias=True)
    bn(f"{fe}.aux_head.1", last)
    conv(f"{fe}.aux_head.3", 1, last, 1, bias=True)
    return keys


def main() -> None:
    here = pathlib.Path(__file__).resolve().parent
    for name, (width, ocr_width, small) in VARIANTS.items():
        keys = derive(width, ocr_width, small)
        doc = {
            "variant": name,
            "width": width, "ocr_width": ocr_width, "small": small,
            "source": "derived by tests/unit/golden/ritm_derive_keys.py from RITM's published module structure "
                      "(SamsungLabs/ritm_interactive_segmentation, HRNetModel with use_rgb_conv=False, "
                      "with_prev_mask=True)",
            "num_parameters": sum(_numel(s) for k, s in keys if not k.rsplit(".", 1)[-1].startswith(("running_", "num_"))),
            "keys": [[k, s] for k, s in keys],
        }
        head = json.dumps({k: v for k, v in doc.items() if k != "keys"}, indent=1)[:-2]
        rows = ",\n".join("  " + json.dumps(row) for row in doc["keys"])
        text = f'{head},\n "keys": [\n{rows}\n ]\n}}\n'  # one key per line: diffs stay readable
        (here / f"ritm_hrnet_keys_{name.removeprefix('ritm-')}.json").write_text(text)


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


if __name__ == "__main__":
    main()
