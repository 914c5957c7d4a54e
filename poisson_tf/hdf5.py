"""HDF5 field files (nu, u, u_ref) with an XDMF sidecar for ParaView (docs/design.rst s.9), written atomically."""
from __future__ import annotations

import json
import os
from xml.sax import saxutils

import numpy as np

from poisson_tf import files

FIELD_NAMES = ("nu", "u", "u_ref")


def _field_shape(name: str, array: np.ndarray) -> tuple:
    if array.ndim not in (3, 4) or len(set(array.shape[-3:])) != 1 or array.shape[-1] < 2:
        raise ValueError(f"field {name!r} must have shape [N, N, N] or [B, N, N, N] with N >= 2, "
                         f"got {array.shape}")
    return array.shape


def write_fields(path: str, fields: dict, family=None, coeffs=None, xdmf: bool = True,
                 attrs: dict | None = None) -> str:
    """Writes named nodal fields (e.g. nu, u, u_ref) to HDF5, and an .xdmf beside it for ParaView.

    Args:
      path: the .h5 file to (over)write.
      fields: name -> array [N, N, N] or [B, N, N, N]; all of one shape.
      family: the fields.Family the fields came from (None if not from one): attributes `family` (its parameters
        as JSON) and `eta`.
      coeffs: the family's coefficients [m] or [B, m], when known.
      xdmf: also write `<path without .h5>.xdmf`.
      attrs: extra file attributes (e.g. solver records).

    Returns:
      the path written.
    """
    if not fields:
        raise ValueError("write_fields needs at least one field")
    arrays = {name: np.asarray(value) for name, value in fields.items()}
    shapes = {name: _field_shape(name, a) for name, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"all fields must have one shape, got {shapes}")
    shape = next(iter(shapes.values()))
    # the pair as one: a failed write (a full disk) leaves the previous .h5 and .xdmf, never a mix
    with files.atomic_paths(path, *([xdmf_path(path)] if xdmf else [])) as tmps, \
            files.hdf5_in_memory(tmps[0]) as f:
        if xdmf:
            with open(tmps[1], "w") as sidecar:
                sidecar.write(xdmf_text(path, {name: (a.shape, a.dtype) for name, a in arrays.items()}))
        for name, array in arrays.items():
            f.create_dataset(name, data=array, compression="gzip", compression_opts=1, shuffle=True)
        f.attrs["resolution"] = shape[-1]
        f.attrs["eta"] = np.nan if family is None else float(family.eta)
        if family is not None:
            f.attrs["family"] = family.to_json()
        f.attrs["coeffs"] = np.asarray([] if coeffs is None else coeffs, dtype=np.float64)
        for key, value in (attrs or {}).items():
            f.attrs[key] = value
    return path


def xdmf_path(h5_path: str) -> str:
    """The sidecar name: field.h5 -> field.xdmf."""
    root, ext = os.path.splitext(h5_path)
    return (root if ext in (".h5", ".hdf5") else h5_path) + ".xdmf"


def _xdmf_number(dtype: np.dtype) -> str:
    return ('NumberType="Float" Precision="8"' if np.dtype(dtype).itemsize == 8
            else 'NumberType="Float" Precision="4"')


def xdmf_text(h5_path: str, datasets: dict) -> str:
    """An XDMF 3 document describing the node-centred datasets of `h5_path` on the unit-cube grid.

    Arrays are stored (x, y, z) in C order, so x varies slowest: ParaView, which reads a 3DCoRectMesh
    slowest-first as (Z, Y, X), shows the array's x axis as its Z axis. On the cube all spacings are equal.

    Args:
      h5_path: the HDF5 file the XDMF will reference (by its base name, so the pair can be moved together).
      datasets: name -> (shape, dtype), each [N, N, N] or [B, N, N, N]; a batch becomes a collection of
        grids, sample b selected by an HDF5 hyperslab.
    """
    # XML-escaped: a file or field name with &, <, > or quotes still gives a valid document
    href = saxutils.escape(os.path.basename(h5_path), {'"': "&quot;"})
    shape = next(iter(datasets.values()))[0]
    n = shape[-1]
    h = 1.0 / (n - 1)
    batch = shape[0] if len(shape) == 4 else None

    def grid(name: str, sample: int | None) -> str:
        lines = [f'    <Grid Name="{name}" GridType="Uniform">',
                 f'      <Topology TopologyType="3DCoRectMesh" Dimensions="{n} {n} {n}"/>',
                 '      <Geometry GeometryType="ORIGIN_DXDYDZ">',
                 '        <DataItem Dimensions="3" Format="XML">0 0 0</DataItem>',
                 f'        <DataItem Dimensions="3" Format="XML">{h!r} {h!r} {h!r}</DataItem>',
                 '      </Geometry>']
        for name_, (fshape, dtype) in datasets.items():
            field = saxutils.escape(name_, {'"': "&quot;"})
            number = _xdmf_number(dtype)
            lines.append(f'      <Attribute Name="{field}" AttributeType="Scalar" Center="Node">')
            if sample is None:
                lines.append(f'        <DataItem Dimensions="{n} {n} {n}" {number} Format="HDF">'
                             f'{href}:/{field}</DataItem>')
            else:
                lines += [f'        <DataItem ItemType="HyperSlab" Dimensions="1 {n} {n} {n}" Type="HyperSlab">',
                          '          <DataItem Dimensions="3 4" Format="XML">'
                          f'{sample} 0 0 0 1 1 1 1 1 {n} {n} {n}</DataItem>',
                          f'          <DataItem Dimensions="{" ".join(map(str, fshape))}" {number} '
                          f'Format="HDF">{href}:/{field}</DataItem>',
                          '        </DataItem>']
            lines.append('      </Attribute>')
        lines.append('    </Grid>')
        return "\n".join(lines)

    if batch is None:
        body = grid("field", None)
    else:
        body = "\n".join(['    <Grid Name="samples" GridType="Collection" CollectionType="Temporal">']
                         + [f'  <Time Value="{b}"/>\n' + grid(f"sample{b}", b) for b in range(batch)]
                         + ['    </Grid>'])
    return ('<?xml version="1.0" ?>\n<Xdmf Version="3.0">\n  <Domain>\n'
            f'{body}\n  </Domain>\n</Xdmf>\n')


def field_shape(path: str, name: str = "nu") -> tuple:
    """(shape, bytes per value) of one dataset of an HDF5 field file, without reading it (None when the file
    cannot be opened or has no such dataset: read_fields then says why)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            dataset = f[name]
            return tuple(dataset.shape), int(dataset.dtype.itemsize)
    except (OSError, KeyError, AttributeError, TypeError):
        return None


def read_fields(path: str, names=("nu",)) -> tuple:
    """Reads named fields and the file attributes from an HDF5 field file.

    Returns:
      ({name: array}, {attribute: value}).

    Raises:
      ValueError: when the file cannot be read as HDF5, a field is missing or has a bad shape.
    """
    import h5py

    if not os.path.isfile(path):
        raise ValueError(f"HDF5 field file {path!r} does not exist")
    try:
        with h5py.File(path, "r") as f:
            missing = [name for name in names if name not in f]
            if missing:
                raise ValueError(f"HDF5 file {path!r} has no dataset {missing[0]!r}; it holds {sorted(f.keys())}")
            for name in names:
                if not isinstance(f[name], h5py.Dataset):
                    raise ValueError(f"{name!r} in {path!r} is a {type(f[name]).__name__.lower()}, not a dataset "
                                     f"of shape [N, N, N] or [B, N, N, N]")
            out = {name: f[name][()] for name in names}
            attrs = dict(f.attrs)
    except OSError as e:
        raise ValueError(f"cannot read {path!r} as an HDF5 field file: {e}") from None
    for name, array in out.items():
        _field_shape(name, array)
    return out, attrs


def _real(value) -> np.ndarray:
    """value as float64; TypeError unless it holds real numbers (a complex value is not cast)."""
    from poisson_tf.fields import is_real

    if not is_real(value):
        raise TypeError(f"not real numbers: {np.asarray(value).dtype}")
    return np.asarray(value, np.float64)


def recorded_family(attrs: dict, path: str):
    """The fields.Family a field file records (attribute `family`, or for files written before families were
    recorded a finite `eta`: the kl family, with as many terms as the recorded coefficients), or None.

    Raises:
      ValueError: attributes that are not a valid family (named with the file), e.g. an impossible eta.
    """
    from poisson_tf import fields

    recorded, eta, coeffs = attrs.get("family"), attrs.get("eta"), attrs.get("coeffs")
    try:
        if recorded is not None:
            return fields.Family.from_params(json.loads(recorded))
        if eta is None or not np.isfinite(_real(eta)):
            return None
        terms = np.shape(coeffs)[-1] if coeffs is not None and np.size(coeffs) else None
        return fields.Family.of("kl", float(eta), terms)
    except (TypeError, ValueError, json.JSONDecodeError) as e:
        raise ValueError(f"the attributes of {path!r} are not a valid diffusivity family (family "
                         f"{recorded!r}, eta {eta!r}): {e}; remove them or fix them") from None


def read_diffusivity(path: str):
    """nu from an HDF5 field file, checked finite and positive, with its provenance when recorded.

    Returns:
      (nu [N,N,N] or [B,N,N,N], coeffs or None, fields.Family or None).

    Raises:
      ValueError: unreadable file, no `nu` dataset, bad shape, non-finite or non-positive values, or provenance
        attributes that are not a family and its coefficients.
    """
    from poisson_tf.fields import check_diffusivity

    data, attrs = read_fields(path, ("nu",))
    nu = check_diffusivity(data["nu"], f"nu in {path}")
    coeffs = attrs.get("coeffs")
    try:
        coeffs = None if coeffs is None or np.size(coeffs) == 0 else _real(coeffs)
    except (TypeError, ValueError):
        raise ValueError(f"the attribute coeffs of {path!r} must be numbers, got {attrs.get('coeffs')!r}; remove it "
                         "or fix it") from None
    family = recorded_family(attrs, path)
    if coeffs is not None and (coeffs.ndim not in (1, 2) or not np.all(np.isfinite(coeffs))):
        raise ValueError(f"the attribute coeffs of {path!r} must be finite coefficients [m] or [B, m], got "
                         f"shape {coeffs.shape}")
    if coeffs is not None and family is not None and coeffs.shape[-1] != family.num_terms:
        raise ValueError(f"the attribute coeffs of {path!r} has {coeffs.shape[-1]} terms, but its family "
                         f"{family.describe()} has {family.num_terms}")
    return nu, coeffs, family
