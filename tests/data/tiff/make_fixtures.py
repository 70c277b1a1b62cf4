#!/usr/bin/env python3
"""Generate the small TIFF test fixtures in tests/data/tiff/ and their expected results.

What it makes (all in this script's own folder):

* TIFF inputs: plain stacks in every supported compression, strip and tile
  layout, classic TIFF and BigTIFF; one file per sample type; JPEG (gray and
  RGB/YCbCr); RGB chunky and planar; OME-TIFF (5-D with physical sizes and
  channel colours, two series in one file, a multi-file set in mf/, sizes in
  nm); an ImageJ hyperstack; plain TIFFs with resolution tags; a folder of
  2-D slices (slices/) and a bad folder (slices_bad/); and bad files (cut in
  half, LZMA compression, 1-bit samples, float16, not a TIFF, zero bytes, an
  OME-XML that disagrees with the pages).
* `*.raw`: the expected pixels, little-endian, C order, in the axis order of
  the manifest entry (lossless fixtures with identical pixels share one file).
* `manifest.json`: one object per fixture input (see MANIFEST SCHEMA below),
  so that a Rust test can check the reader without Python.

How to run (tifffile 2026.3.3, imagecodecs 2026.3.6, numpy):

    PYTHONPATH=/tmp/pyfix python3 tests/data/tiff/make_fixtures.py

It is deterministic: the pixels come from fixed formulas and fixed seeds, the
OME UUIDs and Creator are fixed, tifffile writes no date, so running it again
gives byte-identical files (with the same zlib/zstd/libjpeg builds; the
expected pixels never depend on those builds except for JPEG, whose .raw is the
decode by imagecodecs). The script deletes and rewrites everything it
generates, then reads every file back with tifffile and checks it against the
manifest (pixels after axis reordering, scale, units and channels derived
independently from the tags / OME-XML / ImageJ metadata); it fails loudly on a
mismatch.

MANIFEST SCHEMA: a JSON list of objects. Keys of a readable fixture:

  input        path relative to tests/data/tiff: a file, a folder, or a glob
  kind         "plain" | "ome" | "imagej" | "folder"
  series       int, present only when not 0
  dtype        uint8 uint16 uint32 uint64 int8 int16 int32 int64 float32 float64
  shape        list of ints, in the order of `axes`
  axes         subsequence of "tczyx" (size-1 axes dropped except y and x;
               samples per pixel become c; plain multi-page and folder -> z;
               ImageJ frames/channels/slices and OME T/C/Z -> t/c/z)
  scale        list of floats per axis, or null when there is no physical size;
               an axis without one (channels, OME T without TimeIncrement...)
               gets 1.0. OME PhysicalSize*/TimeIncrement with their units
               (default um / s); ImageJ 1/XResolution in `unit`, spacing,
               finterval; plain TIFF 1/XResolution for ResolutionUnit inch
               (25400 um) or cm (10000 um), in micrometer
  units        list per axis of an OME-NGFF unit name ("micrometer",
               "nanometer", "second") or null; null as a whole when scale is
  channels     list of {"label": str, "color": "RRGGBB"} or null
  compression  lowercase tifffile COMPRESSION name ("none", "lzw",
               "adobe_deflate", "deflate", "packbits", "zstd", "jpeg"), or
               "mixed" for a folder whose files differ
  compression_code  the TIFF Compression tag value (int; null for "mixed")
  predictor    TIFF Predictor tag value: 1 none, 2 horizontal, 3 floating point
               (null for "mixed")
  layout       "strip" | "tile"
  bigtiff      bool
  planar       "contig" | "separate" (only meaningful for multi-sample pixels)
  pixels       file name (in tests/data/tiff) of the expected raw array
  tolerance    max abs difference allowed per pixel (0 = exact)
  note         optional free text
  jpeg_error_vs_original  JPEG only: max abs difference between imagecodecs'
               decode (the .raw) and the array that was encoded (information)

Keys of a bad-input fixture: input, kind, error, why.  `error` is a short
substring the reader's error message should contain, compared
case-insensitively (chosen so that it does not occur in the input's own path);
`why` says what is wrong with the input.
"""

import json
import re
import shutil
import uuid
import warnings
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

HERE = Path(__file__).resolve().parent
MANIFEST = []
RAWS = {}  # raw file name -> bytes

CREATOR = 'ome-pyramid tests/data/tiff/make_fixtures.py'


def fixed_uuid(name):
    """A deterministic urn:uuid for an OME file."""
    return 'urn:uuid:' + str(uuid.uuid5(uuid.NAMESPACE_URL, 'ome-pyramid-fixture/' + name))


# ---------------------------------------------------------------- pixels


def pattern(shape, dtype, seed, levels=12, density=0.03, amp=None):
    """Smooth pattern over most of the dtype range plus sparse deterministic noise.

    The smooth field is quantised to `levels` steps (levels=None: not quantised)
    so that predictor + deflate/LZW/PackBits compress it well; a fraction
    `density` of the pixels gets noise of up to +-`amp` (random low bits), so
    shifted rows, swapped tiles or dropped bytes are still caught.
    """
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0.0, 1.0, n) for n in shape], indexing='ij')
    y, x = grids[-2], grids[-1]
    f = (
        np.sin(2 * np.pi * (0.9 * x + 0.35 * y) + 0.3 * seed)
        + 0.7 * np.cos(2 * np.pi * (0.6 * y - 0.45 * x) + 0.1 * seed)
        + 0.4 * x * y
    )
    for k, g in enumerate(grids[:-2]):
        f = f + 0.35 * np.sin(np.pi * (k + 1) * (g + 0.25 * x) + k + seed)
    f = (f - f.min()) / (f.max() - f.min())  # exactly 0..1
    if levels:
        f = np.floor(f * levels).clip(0, levels - 1) / (levels - 1)
    mask = rng.random(shape) < density
    if dtype.kind in 'ui':
        info = np.iinfo(dtype)
        lo, hi = float(info.min), float(info.max)
        span = hi - lo
        margin = 0.02 * span
        v = np.round(lo + margin + f * (span - 2 * margin))
        v = np.clip(v, lo + margin, hi - margin)  # 64-bit: float64 is inexact near the ends
        if levels and dtype == np.uint16:
            v = np.round(v / 257) * 257  # both bytes equal: PackBits finds byte runs
        if amp is None:
            amp = max(3, int(span) >> 10)
        n = rng.integers(-amp, amp + 1, size=shape, dtype=np.int64) * mask
        if dtype.itemsize == 8:
            # wrapping add of the (possibly negative) noise, exact in 64 bits
            u = np.uint64 if dtype.kind == 'u' else np.int64
            return (v.astype(dtype).view(u) + n.astype(u)).view(dtype)
        return np.clip(v.astype(np.int64) + n, info.min, info.max).astype(dtype)
    # floats: negative and positive values, fractional parts on the noisy pixels
    v = -1500.0 + 4000.0 * f + rng.normal(0.0, 1.0 if amp is None else amp, size=shape) * mask
    return v.astype(dtype)


def save_raw(name, arr):
    """Write the expected array (little-endian, C order); shared names must match."""
    arr = np.ascontiguousarray(arr)
    data = arr.astype(arr.dtype.newbyteorder('<'), copy=False).tobytes(order='C')
    if name in RAWS:
        assert RAWS[name] == data, f'{name}: shared raw differs'
    else:
        RAWS[name] = data
        (HERE / name).write_bytes(data)
    return name


def add(input, kind, arr, axes, raw, *, series=0, scale=None, units=None,
        channels=None, compression='none', predictor=1, layout='strip',
        bigtiff=False, planar='contig', tolerance=0, note=None, **extra):
    assert arr.ndim == len(axes), (input, arr.shape, axes)
    comp_code = None if compression == 'mixed' else int(tifffile.COMPRESSION[compression.upper()])
    e = {'input': input, 'kind': kind}
    if series:
        e['series'] = series
    e.update({
        'dtype': str(arr.dtype),
        'shape': list(arr.shape),
        'axes': axes,
        'scale': scale,
        'units': units if scale is not None else None,
        'channels': channels,
        'compression': compression,
        'compression_code': comp_code,
        'predictor': predictor,
        'layout': layout,
        'bigtiff': bigtiff,
        'planar': planar,
        'pixels': save_raw(raw, arr),
        'tolerance': tolerance,
    })
    e.update(extra)
    if note:
        e['note'] = note
    MANIFEST.append(e)


def add_error(input, kind, error, why):
    assert error.lower() not in input.lower(), (input, error)
    MANIFEST.append({'input': input, 'kind': kind, 'error': error, 'why': why})


def imwrite(name, data, **kw):
    path = HERE / name
    path.parent.mkdir(parents=True, exist_ok=True)
    kw.setdefault('metadata', None)  # no tifffile JSON description unless asked
    tifffile.imwrite(path, data, **kw)
    return name


# ---------------------------------------------------------------- fixtures


def plain_stacks():
    base = pattern((3, 40, 70), np.uint16, seed=1)
    raw = 'base_u16.raw'
    comps = [
        # (tifffile compression, manifest name, predictor)
        (None, 'none', 1),
        ('lzw', 'lzw', 2),
        ('adobe_deflate', 'adobe_deflate', 2),
        ('deflate', 'deflate', 2),
        ('packbits', 'packbits', 1),
        ('zstd', 'zstd', 2),
    ]
    variants = [(comp, 'strip', False) for comp in comps]
    variants += [(comp, 'tile', True) for comp in comps]
    variants += [(comps[2], 'strip', True), (comps[2], 'tile', False)]
    for (comp, cname, pred), layout, big in variants:
        name = f'stack_{cname}_{layout}{"_bigtiff" if big else ""}{"_classic" if layout == "tile" and not big else ""}.tif'
        kw = dict(compression=comp, predictor=pred if pred > 1 else None,
                  photometric='minisblack', bigtiff=big)
        if layout == 'strip':
            kw['rowsperstrip'] = 16
        else:
            kw['tile'] = (32, 48)
        note = None
        if cname == 'none' and layout == 'strip':
            # one plain stack keeps tifffile's JSON shape description
            kw['metadata'] = {}
            note = 'ImageDescription holds tifffile\'s JSON {"shape": [3, 40, 70]}; still plain'
        imwrite(name, base, **kw)
        add(name, 'plain', base, 'zyx', raw, compression=cname, predictor=pred,
            layout=layout, bigtiff=big, note=note or (
                'rowsperstrip 16: last strip of each page has 8 rows' if layout == 'strip'
                else 'tiles 32x48 (rows x cols), edge tiles padded'))


def dtypes():
    # (dtype, predictor)
    for dt, pred in [('int8', 1), ('int16', 2), ('int32', 2), ('int64', 2),
                     ('uint8', 2), ('uint32', 2), ('uint64', 1),
                     ('float32', 3), ('float64', 1)]:
        a = pattern((16, 20), dt, seed=10 + len(dt) + np.dtype(dt).itemsize, density=0.25)
        name = f'dtype_{dt}.tif'
        imwrite(name, a, compression='zlib', predictor=pred if pred > 1 else None,
                photometric='minisblack', rowsperstrip=6)
        add(name, 'plain', a, 'yx', f'dtype_{dt}.raw', compression='adobe_deflate',
            predictor=pred, note=f'min {a.min()}, max {a.max()}')
    a = pattern((16, 20), np.float16, seed=20)
    imwrite('half_precision.tif', a, compression='zlib', photometric='minisblack')
    add_error('half_precision.tif', 'plain', 'float',
              'SampleFormat 3 (IEEE float) with BitsPerSample 16: float16 samples are not supported')


def jpeg_fixtures():
    report = {}
    # grayscale, tiled, two pages
    gray = pattern((40, 70), np.uint8, seed=30, levels=None, density=0.1, amp=6)
    name = imwrite('jpeg_gray_tile.tif', gray, compression='jpeg', tile=(32, 48),
                   photometric='minisblack')
    dec = tifffile.imread(HERE / name)
    err = int(np.abs(dec.astype(int) - gray).max())
    add(name, 'plain', dec, 'yx', 'jpeg_gray_tile.raw', compression='jpeg',
        layout='tile', tolerance=2, jpeg_error_vs_original=err,
        note='expected = imagecodecs (libjpeg-turbo) decode; tolerance covers other decoders')
    report['gray'] = err
    # RGB, tifffile writes YCbCr with 2x2 chroma subsampling, strips of 16 rows
    rgb = np.moveaxis(pattern((3, 40, 48), np.uint8, seed=31, levels=None, density=0.1, amp=6), 0, -1).copy()
    name = imwrite('jpeg_rgb_strip.tif', rgb, compression='jpeg', photometric='rgb',
                   rowsperstrip=16)
    dec = tifffile.imread(HERE / name)
    err = int(np.abs(dec.astype(int) - rgb).max())
    add(name, 'plain', np.moveaxis(dec, -1, 0), 'cyx', 'jpeg_rgb_strip.raw',
        compression='jpeg', tolerance=3, jpeg_error_vs_original=err,
        note='Photometric YCbCr, YCbCrSubSampling (2, 2), JPEGTables; expected = '
             'imagecodecs decode (fancy upsampling) as c,y,x')
    report['rgb'] = err
    # information only: how far does nearest-neighbour chroma upsampling move the result?
    with tifffile.TiffFile(HERE / name) as tif:
        page = tif.pages[0]
        tables = page.jpegtables
        ycc = []
        for off, cnt in zip(page.dataoffsets, page.databytecounts):
            tif.filehandle.seek(off)
            ycc.append(imagecodecs.jpeg8_decode(tif.filehandle.read(cnt), tables=tables,
                                                colorspace='YCBCR', outcolorspace='YCBCR'))
    ycc = np.concatenate(ycc, axis=0)[: rgb.shape[0]].astype(float)
    h, w = ycc.shape[:2]
    chroma = ycc[..., 1:]
    ph, pw = -h % 2, -w % 2
    c = np.pad(chroma, ((0, ph), (0, pw), (0, 0)), mode='edge')
    c = c.reshape(c.shape[0] // 2, 2, c.shape[1] // 2, 2, 2).mean(axis=(1, 3))
    c = np.repeat(np.repeat(c, 2, 0), 2, 1)[:h, :w]
    Y, Cb, Cr = ycc[..., 0], c[..., 0] - 128, c[..., 1] - 128
    near = np.stack([Y + 1.402 * Cr, Y - 0.344136 * Cb - 0.714136 * Cr, Y + 1.772 * Cb], -1)
    near = np.clip(np.round(near), 0, 255)
    report['rgb_nearest_vs_fancy_estimate'] = int(np.abs(near - dec).max())
    return report


def rgb_fixtures():
    rgb = pattern((3, 24, 40), np.uint8, seed=40)  # c, y, x
    name = imwrite('rgb_contig_strip.tif', np.moveaxis(rgb, 0, -1), photometric='rgb',
                   compression='lzw', predictor=True, rowsperstrip=16)
    add(name, 'plain', rgb, 'cyx', 'rgb_u8.raw', compression='lzw', predictor=2,
        note='chunky RGB (40, 70, 3) on disk; samples become c')
    name = imwrite('rgb_planar_tile.tif', rgb, photometric='rgb', planarconfig='separate',
                   compression='zlib', tile=(16, 16))
    add(name, 'plain', rgb, 'cyx', 'rgb_u8.raw', compression='adobe_deflate',
        layout='tile', planar='separate', note='PlanarConfiguration 2, one tile set per sample')


def ome_fixtures():
    # (a) 5-D, stored with DimensionOrder XYCZT (axes TZCYX) so reordering is exercised
    tczyx = pattern((2, 3, 4, 20, 24), np.uint16, seed=50)
    stored = np.ascontiguousarray(tczyx.transpose(0, 2, 1, 3, 4))  # t, z, c, y, x
    name = 'ome_tczyx.ome.tif'
    colors = [0x0000FFFF, 0x00FF00FF, 0xFF0000FF]  # RGBA
    signed = [c - (1 << 32) if c >= 1 << 31 else c for c in colors]
    imwrite(name, stored, photometric='minisblack', tile=(16, 16), compression='zlib',
            predictor=True, ome=True,
            metadata={'UUID': fixed_uuid(name), 'Creator': CREATOR, 'Name': 'tczyx',
                      'axes': 'TZCYX', 'PhysicalSizeX': 0.5, 'PhysicalSizeXUnit': 'µm',
                      'PhysicalSizeY': 0.5, 'PhysicalSizeYUnit': 'µm',
                      'PhysicalSizeZ': 2.0, 'PhysicalSizeZUnit': 'µm',
                      'TimeIncrement': 1.5, 'TimeIncrementUnit': 's',
                      'Channel': {'Name': ['DAPI', 'GFP', 'RFP'], 'Color': signed}})
    add(name, 'ome', tczyx, 'tczyx', 'ome_tczyx.raw',
        scale=[1.5, 1.0, 2.0, 0.5, 0.5],
        units=['second', None, 'micrometer', 'micrometer', 'micrometer'],
        channels=[{'label': 'DAPI', 'color': '0000FF'}, {'label': 'GFP', 'color': '00FF00'},
                  {'label': 'RFP', 'color': 'FF0000'}],
        compression='adobe_deflate', predictor=2, layout='tile',
        note='DimensionOrder XYCZT (pages in t, z, c order); 16x16 tiles; '
             'OME Color ints are signed RGBA: 65535, 16711935, -16776961')

    # (b) two series in one file
    name = 'ome_two_series.ome.tif'
    s0 = pattern((4, 32, 40), np.uint8, seed=51)
    s1 = pattern((2, 16, 24), np.uint8, seed=52)
    with tifffile.TiffWriter(HERE / name, ome=True) as w:
        w.write(s0, photometric='minisblack', compression='zlib',
                metadata={'UUID': fixed_uuid(name), 'Creator': CREATOR, 'axes': 'ZYX',
                          'Name': 'first'})
        w.write(s1, photometric='minisblack', compression='zlib',
                metadata={'axes': 'TYX', 'Name': 'second'})
    add(name, 'ome', s0, 'zyx', 'ome_two_series_0.raw', compression='adobe_deflate',
        note='Image:0 of two')
    add(name, 'ome', s1, 'tyx', 'ome_two_series_1.raw', series=1,
        compression='adobe_deflate', note='Image:1 of two, pages 4..5 of the file')

    # (c) multi-file OME: T planes split over two files in mf/
    names = ['mf_t0.ome.tif', 'mf_t1.ome.tif']
    uuids = [fixed_uuid('mf/' + n) for n in names]
    tzyx = pattern((2, 3, 16, 24), np.uint16, seed=53)
    tiffdata = ''.join(
        f'<TiffData FirstT="{t}" FirstZ="0" FirstC="0" IFD="0" PlaneCount="3">'
        f'<UUID FileName="{n}">{u}</UUID></TiffData>'
        for t, (n, u) in enumerate(zip(names, uuids)))
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" '
        f'UUID="{{me}}" Creator="{CREATOR}">'
        '<Image ID="Image:0" Name="mf"><Pixels ID="Pixels:0" DimensionOrder="XYZCT" '
        'Type="uint16" SizeX="24" SizeY="16" SizeZ="3" SizeC="1" SizeT="2" '
        'PhysicalSizeX="0.2" PhysicalSizeY="0.2" PhysicalSizeZ="1.0" '
        'PhysicalSizeXUnit="µm" PhysicalSizeYUnit="µm" PhysicalSizeZUnit="µm" '
        'TimeIncrement="30" TimeIncrementUnit="s">'
        '<Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
        f'{tiffdata}</Pixels></Image></OME>')
    for t, (n, u) in enumerate(zip(names, uuids)):
        imwrite('mf/' + n, tzyx[t], photometric='minisblack', compression='zlib',
                predictor=True, description=xml.replace('{me}', u).encode())
    add('mf/mf_t0.ome.tif', 'ome', tzyx, 'tzyx', 'ome_mf.raw',
        scale=[30.0, 1.0, 0.2, 0.2], units=['second', 'micrometer', 'micrometer', 'micrometer'],
        compression='adobe_deflate', predictor=2,
        note='T=0 in mf_t0.ome.tif, T=1 in mf_t1.ome.tif, linked by TiffData/UUID FileName; '
             'both files carry the full OME-XML with their own UUID')

    # (d) physical sizes in nanometres for x/y, micrometres for z
    name = 'ome_nm.ome.tif'
    zyx = pattern((2, 24, 30), np.uint16, seed=54)
    imwrite(name, zyx, photometric='minisblack', compression='zlib', predictor=True, ome=True,
            metadata={'UUID': fixed_uuid(name), 'Creator': CREATOR, 'axes': 'ZYX',
                      'PhysicalSizeX': 250.0, 'PhysicalSizeXUnit': 'nm',
                      'PhysicalSizeY': 250.0, 'PhysicalSizeYUnit': 'nm',
                      'PhysicalSizeZ': 0.75, 'PhysicalSizeZUnit': 'µm'})
    add(name, 'ome', zyx, 'zyx', 'ome_nm.raw', scale=[0.75, 250.0, 250.0],
        units=['micrometer', 'nanometer', 'nanometer'], compression='adobe_deflate',
        predictor=2, note='PhysicalSizeX/YUnit "nm", PhysicalSizeZUnit "µm"')

    # (e) OME-XML says SizeZ=5 but the file has only 3 pages
    name = 'ome_wrong_planes.ome.tif'
    bad = pattern((3, 16, 24), np.uint8, seed=55)
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" '
        f'UUID="{fixed_uuid(name)}" Creator="{CREATOR}">'
        '<Image ID="Image:0" Name="bad"><Pixels ID="Pixels:0" DimensionOrder="XYZCT" '
        'Type="uint8" SizeX="24" SizeY="16" SizeZ="5" SizeC="1" SizeT="1">'
        '<Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
        '<TiffData IFD="0" PlaneCount="5"/></Pixels></Image></OME>')
    imwrite(name, bad, photometric='minisblack', description=xml.encode())
    add_error(name, 'ome', 'SizeZ',
              'OME-XML declares SizeZ=5 (TiffData PlaneCount=5) but the file has only 3 IFDs')


def imagej_fixture():
    tzcyx = pattern((3, 4, 2, 16, 20), np.uint16, seed=60)
    name = imwrite('imagej_hyperstack.tif', tzcyx, imagej=True, resolution=(4.0, 4.0),
                   metadata={'axes': 'TZCYX', 'spacing': 1.5, 'unit': 'um',
                             'finterval': 2.0})
    add(name, 'imagej', np.ascontiguousarray(tzcyx.transpose(0, 2, 1, 3, 4)), 'tczyx',
        'imagej.raw', scale=[2.0, 1.0, 1.5, 0.25, 0.25],
        units=['second', None, 'micrometer', 'micrometer', 'micrometer'],
        note='uncompressed; frames=3 slices=4 channels=2, pages in t, z, c order; '
             'XResolution 4 px/um, spacing 1.5, finterval 2.0, unit um')


def resolution_fixtures():
    img = pattern((24, 30), np.uint16, seed=70)
    name = imwrite('res_cm.tif', img, photometric='minisblack', compression='zlib',
                   predictor=True, resolution=(20000, 20000), resolutionunit='CENTIMETER')
    add(name, 'plain', img, 'yx', 'res_u16.raw', scale=[0.5, 0.5],
        units=['micrometer', 'micrometer'], compression='adobe_deflate', predictor=2,
        note='XResolution 20000 px/cm, ResolutionUnit 3 (cm)')
    name = imwrite('res_inch.tif', img, photometric='minisblack', compression='zlib',
                   predictor=True, resolution=(12700, 12700), resolutionunit='INCH')
    add(name, 'plain', img, 'yx', 'res_u16.raw', scale=[2.0, 2.0],
        units=['micrometer', 'micrometer'], compression='adobe_deflate', predictor=2,
        note='XResolution 12700 px/inch, ResolutionUnit 2 (inch)')


def folder_fixtures():
    stack = pattern((12, 16, 20), np.uint16, seed=80)
    cycle = [(None, None), ('zlib', True), ('lzw', True), ('packbits', None)]
    for i in range(12):
        comp, pred = cycle[i % 4]
        imwrite(f'slices/z{i + 1}.tif', stack[i], photometric='minisblack', compression=comp,
                predictor=pred)
    note = ('z1..z12.tif in natural order (z2 before z10); compressions cycle '
            'none, adobe_deflate+predictor, lzw+predictor, packbits')
    add('slices', 'folder', stack, 'zyx', 'slices.raw', compression='mixed', predictor=None,
        note=note)
    add('slices/z*.tif', 'folder', stack, 'zyx', 'slices.raw', compression='mixed',
        predictor=None, note='glob; ' + note)
    bad = pattern((5, 16, 20), np.uint16, seed=81)
    for i in range(5):
        a = bad[i] if i != 2 else pattern((16, 21), np.uint16, seed=82)
        imwrite(f'slices_bad/z{i + 1}.tif', a, photometric='minisblack')
    add_error('slices_bad', 'folder', 'z3.tif',
              'z3.tif is 16x21 (rows x cols) while the other slices are 16x20')


def bad_files():
    img = pattern((32, 48), np.uint16, seed=90)
    imwrite('cut_source.tmp', img, photometric='minisblack', compression='zlib', tile=(16, 16))
    data = (HERE / 'cut_source.tmp').read_bytes()
    (HERE / 'cut_source.tmp').unlink()
    (HERE / 'cut_in_half.tif').write_bytes(data[: len(data) // 2])
    add_error('cut_in_half.tif', 'plain', 'truncated',
              f'tiled zlib file of {len(data)} bytes cut to its first {len(data) // 2}: '
              'the IFD is intact but later tiles lie past the end of the file')

    imwrite('lzma.tif', img, photometric='minisblack', compression='lzma')
    add_error('lzma.tif', 'plain', 'compression',
              'Compression 34925 (LZMA), which the reader does not support')

    bits = pattern((24, 30), np.uint8, seed=91) > 128
    imwrite('bilevel.tif', bits, photometric='minisblack')
    add_error('bilevel.tif', 'plain', 'bits', 'BitsPerSample 1 (bilevel image)')

    (HERE / 'not_a_tiff.tif').write_text('This is a text file, not an image.\n')
    add_error('not_a_tiff.tif', 'plain', 'not a tiff',
              'text file: no II*/MM* TIFF header')

    (HERE / 'zero_length.tif').write_bytes(b'')
    add_error('zero_length.tif', 'plain', 'empty', 'the file is 0 bytes long')


# ---------------------------------------------------------------- verification

LETTER = {'T': 't', 'C': 'c', 'S': 'c', 'Z': 'z', 'I': 'z', 'Q': 'z', 'Y': 'y', 'X': 'x'}


def canonical(arr, axes):
    """tifffile series array + axes -> our reader's axis rule (t, c, z, y, x)."""
    axes = [LETTER[a] for a in axes]
    assert len(set(axes)) == len(axes), axes
    order = [axes.index(a) for a in 'tczyx' if a in axes]
    arr = arr.transpose(order)
    kept = ''.join(a for a in 'tczyx' if a in axes)
    keep = [i for i, a in enumerate(kept) if arr.shape[i] != 1 or a in 'yx']
    return arr.reshape([arr.shape[i] for i in keep]), ''.join(kept[i] for i in keep)


OME_UNITS = {'µm': 'micrometer', 'um': 'micrometer', 'nm': 'nanometer', 's': 'second',
             'ms': 'millisecond'}


def derive_meta(path, kind, series, axes):
    """Scale, units and channels from the file's own metadata, per the reader's rules."""
    scale = {a: None for a in axes}
    unit = {a: None for a in axes}
    channels = None
    with tifffile.TiffFile(path) as tif:
        if kind == 'ome':
            ome = tifffile.xml2dict(tif.ome_metadata)['OME']
            images = ome['Image'] if isinstance(ome['Image'], list) else [ome['Image']]
            px = images[series]['Pixels']
            for a, key in (('x', 'PhysicalSizeX'), ('y', 'PhysicalSizeY'),
                           ('z', 'PhysicalSizeZ'), ('t', 'TimeIncrement')):
                if key in px and a in axes:
                    scale[a] = float(px[key])
                    unit[a] = OME_UNITS[px.get(key + 'Unit', 's' if a == 't' else 'µm')]
            ch = px.get('Channel')
            ch = ch if isinstance(ch, list) else [ch] if ch else []
            if any('Name' in c for c in ch):
                channels = [{'label': c['Name'],
                             'color': '%06X' % ((int(c['Color']) & 0xFFFFFFFF) >> 8)}
                            for c in ch]
        elif kind == 'imagej':
            ij = tif.imagej_metadata
            page = tif.pages[0]
            num, den = page.tags['XResolution'].value
            u = {'um': 'micrometer', 'micron': 'micrometer', 'µm': 'micrometer'}[ij['unit']]
            scale.update(x=den / num, y=den / num, z=ij['spacing'], t=ij['finterval'])
            unit.update(x=u, y=u, z=u, t='second')
        else:
            page = tif.pages[0]
            ru = page.tags.get('ResolutionUnit')
            per = {2: 25400.0, 3: 10000.0}.get(int(ru.value)) if ru else None
            if per:
                for a, tag in (('x', 'XResolution'), ('y', 'YResolution')):
                    num, den = page.tags[tag].value
                    scale[a] = per * den / num
                    unit[a] = 'micrometer'
    if all(v is None for v in scale.values()):
        return None, None, channels
    return ([1.0 if scale[a] is None else scale[a] for a in axes],
            [unit[a] for a in axes], channels)


def read_expected(e):
    dtype = np.dtype(e['dtype']).newbyteorder('<')
    return np.fromfile(HERE / e['pixels'], dtype=dtype).reshape(e['shape'])


def verify():
    for e in MANIFEST:
        path = HERE / e['input']
        if 'error' in e:
            verify_error(e)
            continue
        if e['kind'] == 'folder':
            if path.is_dir():
                files = tifffile.natural_sorted(str(p) for p in path.glob('*.tif'))
            else:
                files = tifffile.natural_sorted(str(p) for p in HERE.glob(e['input']))
            assert [Path(f).name for f in files] == [f'z{i}.tif' for i in range(1, 13)], files
            got, axes = tifffile.imread(files), 'zyx'
            # and tifffile's own glob handling agrees
            if not path.is_dir():
                assert np.array_equal(tifffile.imread(str(HERE / e['input'])), got)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter('error')
                with tifffile.TiffFile(path) as tif:
                    assert {'ome': tif.is_ome, 'imagej': tif.is_imagej,
                            'plain': not (tif.is_ome or tif.is_imagej)}[e['kind']], e['input']
                    s = tif.series[e.get('series', 0)]
                    got, axes = canonical(s.asarray(), s.axes)
                    page = s.pages[0] if hasattr(s.pages[0], 'compression') else s.keyframe
                    assert page.compression.name.lower() == e['compression'], e['input']
                    assert int(page.predictor) == e['predictor'], e['input']
                    assert page.is_tiled == (e['layout'] == 'tile'), e['input']
                    assert tif.is_bigtiff == e['bigtiff'], e['input']
                    if page.samplesperpixel > 1:
                        assert page.planarconfig.name.lower() == e['planar'], e['input']
        exp = read_expected(e)
        assert axes == e['axes'], (e['input'], axes, e['axes'])
        assert got.dtype == exp.dtype and got.shape == exp.shape, (e['input'], got.shape)
        assert np.array_equal(got, exp), e['input']
        if e['kind'] != 'folder':
            scale, units, channels = derive_meta(path, e['kind'], e.get('series', 0), e['axes'])
            assert scale == e['scale'], (e['input'], scale, e['scale'])
            assert units == e['units'], (e['input'], units, e['units'])
            assert channels == e['channels'], (e['input'], channels, e['channels'])
        else:
            for f in files:
                s, u, c = derive_meta(f, 'plain', 0, 'yx')
                assert s is None and c is None, f


def verify_error(e):
    path = HERE / e['input']
    name = e['input']
    if name in ('not_a_tiff.tif', 'zero_length.tif'):
        try:
            tifffile.TiffFile(path).close()
        except tifffile.TiffFileError:
            return
        raise AssertionError(f'tifffile read {name}')
    if name == 'slices_bad':
        files = tifffile.natural_sorted(str(p) for p in path.glob('*.tif'))
        shapes = [tifffile.imread(f).shape for f in files]
        assert shapes == [(16, 20)] * 2 + [(16, 21)] + [(16, 20)] * 2, shapes
        return
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            if name == 'cut_in_half.tif':
                size = path.stat().st_size
                assert page.is_tiled and any(
                    o + n > size for o, n in zip(page.dataoffsets, page.databytecounts))
                assert all(o + n <= size for o, n in
                           zip(page.dataoffsets[:1], page.databytecounts[:1]))
            elif name == 'lzma.tif':
                assert int(page.compression) == 34925
                tif.asarray()  # valid file, just a codec we do not support
            elif name == 'bilevel.tif':
                assert page.bitspersample == 1 and tif.asarray().dtype == bool
            elif name == 'half_precision.tif':
                assert page.bitspersample == 16 and int(page.sampleformat) == 3
                assert tif.asarray().dtype == np.float16
            elif name == 'ome_wrong_planes.ome.tif':
                assert len(tif.pages) == 3 and 'SizeZ="5"' in tif.ome_metadata
            else:
                raise AssertionError(name)


# ---------------------------------------------------------------- main


def clean():
    keep = {Path(__file__).name}
    for p in HERE.iterdir():
        if p.name in keep:
            continue
        if p.is_dir() and p.name in ('mf', 'slices', 'slices_bad'):
            shutil.rmtree(p)
        elif p.suffix in ('.tif', '.raw', '.json', '.tmp'):
            p.unlink()


def main():
    assert tifffile.__version__ == '2026.3.3', tifffile.__version__
    clean()
    plain_stacks()
    dtypes()
    jpeg_report = jpeg_fixtures()
    rgb_fixtures()
    ome_fixtures()
    imagej_fixture()
    resolution_fixtures()
    folder_fixtures()
    bad_files()
    text = json.dumps(MANIFEST, indent=1, ensure_ascii=False) + '\n'
    # lists of numbers / strings / null on one line
    text = re.sub(r'\[\n\s+([^\[\]{}]*?)\n\s*\]',
                  lambda m: '[' + re.sub(r',\n\s*', ', ', m.group(1)) + ']', text)
    (HERE / 'manifest.json').write_text(text, encoding='utf-8')
    verify()
    total = sum(p.stat().st_size for p in HERE.rglob('*') if p.is_file())
    print(f'{len(MANIFEST)} manifest entries, {total} bytes in {HERE}')
    print('jpeg max abs error vs original:', jpeg_report)


if __name__ == '__main__':
    main()
