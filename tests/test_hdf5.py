"""HDF5 field files and their XDMF sidecars (DESIGN.md section 9)."""
import os
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pytest

from poisson_tf import fields, files, hdf5


def test_round_trip_with_attributes(tmp_path):
    path = str(tmp_path / "f.h5")
    nu = np.random.default_rng(0).uniform(0.1, 2, (5, 5, 5)).astype(np.float32)
    hdf5.write_fields(path, {"nu": nu, "u": 1 - nu}, family=fields.Family.of("kl", 0.5, 2), coeffs=[1.0, 2.0])
    data, attrs = hdf5.read_fields(path, ("nu", "u"))
    np.testing.assert_array_equal(data["nu"], nu)
    assert attrs["resolution"] == 5 and attrs["eta"] == 0.5
    np.testing.assert_array_equal(attrs["coeffs"], [1.0, 2.0])
    assert hdf5.read_diffusivity(path)[2] == fields.Family.of("kl", 0.5, 2)


def test_the_family_is_recorded_and_an_impossible_one_refused(tmp_path):
    path = str(tmp_path / "f.h5")
    family = fields.Family.of("twophase", num_terms=8, contrast=20.0)
    coeffs = family.sample(1, seed=0)[0]
    hdf5.write_fields(path, {"nu": family.diffusivity(coeffs, 5)}, family=family, coeffs=coeffs, xdmf=False)
    nu, read_coeffs, read_family = hdf5.read_diffusivity(path)
    assert read_family == family and np.array_equal(read_coeffs, coeffs) and set(np.unique(nu)) <= {1.0, 20.0}
    for attrs, message in ((dict(family='{"kind": "kl", "eta": -1.0}'), "not a valid diffusivity family"),
                           (dict(family="not json"), "not a valid diffusivity family"),
                           (dict(family=None, eta=0.5, coeffs=np.ones(3)), None)):
        with h5py.File(path, "a") as f:
            for key, value in attrs.items():
                if value is None:
                    f.attrs.pop(key, None)
                else:
                    f.attrs[key] = value
        if message:
            with pytest.raises(ValueError, match=message):
                hdf5.read_diffusivity(path)
        else:  # written before families were recorded: kl, with the coefficients' number of terms
            assert hdf5.read_diffusivity(path)[2] == fields.Family.of("kl", 0.5, 3)


def _xdmf_items(path):
    root = ET.parse(hdf5.xdmf_path(path)).getroot()
    return root, [(a.get("Name"), d.text.strip(), d.get("Dimensions"))
                  for a in root.iter("Attribute") for d in a.iter("DataItem") if d.get("Format") == "HDF"]


def test_xdmf_references_the_datasets_and_shapes(tmp_path):
    path = str(tmp_path / "single.h5")
    hdf5.write_fields(path, {"nu": np.ones((6, 6, 6)), "u": np.zeros((6, 6, 6), np.float32)})
    root, items = _xdmf_items(path)
    assert items == [("nu", "single.h5:/nu", "6 6 6"), ("u", "single.h5:/u", "6 6 6")]
    topology = root.find(".//Topology")
    assert topology.get("TopologyType") == "3DCoRectMesh" and topology.get("Dimensions") == "6 6 6"
    spacing = root.findall(".//Geometry/DataItem")[1].text.split()
    assert [float(s) for s in spacing] == [0.2] * 3
    with h5py.File(path) as f:  # every referenced dataset exists with the declared shape
        for _, ref, dims in items:
            assert f[ref.split(":/")[1]].shape == tuple(int(d) for d in dims.split())


def test_batch_xdmf_selects_each_sample_by_hyperslab(tmp_path):
    path = str(tmp_path / "batch.h5")
    hdf5.write_fields(path, {"u": np.zeros((3, 4, 4, 4))})
    root = ET.parse(hdf5.xdmf_path(path)).getroot()
    grids = root.findall(".//Grid[@GridType='Uniform']")
    assert len(grids) == 3
    starts = [g.find(".//DataItem[@ItemType='HyperSlab']/DataItem").text.split()[0] for g in grids]
    assert starts == ["0", "1", "2"]
    _, items = _xdmf_items(path)
    assert {dims for _, _, dims in items} == {"3 4 4 4"}


def test_failed_write_leaves_previous_file_intact(tmp_path):
    path = str(tmp_path / "keep.h5")
    hdf5.write_fields(path, {"nu": np.ones((3, 3, 3))}, xdmf=False)
    with pytest.raises(ValueError, match="one shape"):
        hdf5.write_fields(path, {"nu": np.ones((4, 4, 4)), "u": np.ones((3, 3, 3))})
    with pytest.raises(RuntimeError):
        with files.atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("partial")
            raise RuntimeError("crash mid-write")
    assert hdf5.read_fields(path)[0]["nu"].shape == (3, 3, 3)
    assert sorted(os.listdir(tmp_path)) == ["keep.h5"]  # no temporary file left behind


@pytest.mark.parametrize("content, names, message", [
    (b"this is not hdf5", ("nu",), "cannot read .* as an HDF5 field file"),
    (None, ("nu", "u"), "has no dataset 'u'"),
])
def test_unreadable_or_incomplete_file_gets_a_clear_error(tmp_path, content, names, message):
    path = str(tmp_path / "bad.h5")
    if content is None:
        hdf5.write_fields(path, {"nu": np.ones((3, 3, 3))}, xdmf=False)
    else:
        with open(path, "wb") as f:
            f.write(content)
    with pytest.raises(ValueError, match=message):
        hdf5.read_fields(path, names)
    with pytest.raises(ValueError, match="does not exist"):
        hdf5.read_fields(str(tmp_path / "missing.h5"))


def test_bad_field_shape_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"must have shape \[N, N, N\]"):
        hdf5.write_fields(str(tmp_path / "x.h5"), {"nu": np.ones((3, 4, 5))})


def test_xdmf_is_valid_xml_whatever_the_file_is_called(tmp_path):
    path = str(tmp_path / 'a&b <"c">.h5')
    hdf5.write_fields(path, {"nu": np.ones((3, 3, 3))})
    root = ET.parse(hdf5.xdmf_path(path)).getroot()  # parses: the name is escaped
    (item,) = [d for d in root.iter("DataItem") if d.get("Format") == "HDF"]
    assert item.text.strip() == 'a&b <"c">.h5:/nu'
