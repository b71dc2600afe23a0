import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy.io import savemat

from nuclei.datasets import DatasetError, list_layouts, load_dataset, rasterize_polygons

RNG = np.random.default_rng(0)


def _image(h=32, w=32):
    return RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)


def test_pannuke(tmp_path):
    images = np.stack([_image(), _image()]).astype(np.float64)  # PanNuke ships float64 images
    masks = np.zeros((2, 32, 32, 6))
    masks[0, 2:6, 2:6, 0] = 7  # neoplastic nucleus id 7
    masks[0, 10:14, 10:14, 2] = 7  # a connective nucleus reusing the id in its own channel
    masks[1, 20:25, 20:25, 1] = 3
    masks[..., 5] = (masks[..., :5].sum(-1) == 0).astype(float)
    (tmp_path / "images" / "fold1").mkdir(parents=True)
    (tmp_path / "masks" / "fold1").mkdir(parents=True)
    np.save(tmp_path / "images" / "fold1" / "images.npy", images)
    np.save(tmp_path / "masks" / "fold1" / "masks.npy", masks)
    tiles = load_dataset(tmp_path)
    assert tiles.source.startswith("pannuke") and len(tiles) == 2 and tiles.mpp == 0.25
    assert tiles.instances[0].max() == 2  # same id in two channels -> two nuclei
    assert tiles.types[0][3, 3] == 1 and tiles.types[0][12, 12] == 3 and tiles.types[1][22, 22] == 2
    np.testing.assert_array_equal(tiles.images[0], images[0].astype(np.uint8))


def test_monuseg_xml(tmp_path):
    (tmp_path / "Tissue Images").mkdir()
    (tmp_path / "Annotations").mkdir()
    tifffile.imwrite(tmp_path / "Tissue Images" / "TCGA-1.tif", _image(40, 50))
    xml = """<?xml version="1.0"?><Annotations><Annotation><Regions>
    <Region Id="1"><Vertices><Vertex X="5" Y="5"/><Vertex X="15" Y="5"/><Vertex X="15" Y="15"/>
    <Vertex X="5" Y="15"/></Vertices></Region>
    <Region Id="2"><Vertices><Vertex X="30" Y="20"/><Vertex X="40" Y="20"/><Vertex X="35" Y="30"/></Vertices></Region>
    </Regions></Annotation></Annotations>"""
    (tmp_path / "Annotations" / "TCGA-1.xml").write_text(xml)
    tiles = load_dataset(tmp_path)
    assert tiles.source.startswith("monuseg") and tiles.images[0].shape == (40, 50, 3)
    inst = tiles.instances[0]
    assert inst.max() == 2 and inst[10, 10] == 1 and inst[22, 35] == 2 and inst[0, 0] == 0
    assert 90 <= (inst == 1).sum() <= 121  # the 10 x 10 square


@pytest.mark.parametrize("lizard", [False, True])
def test_consep_and_lizard_mat(tmp_path, lizard):
    (tmp_path / "Train" / "Images").mkdir(parents=True)
    (tmp_path / "Train" / "Labels").mkdir(parents=True)
    Image.fromarray(_image()).save(tmp_path / "Train" / "Images" / "train_1.png")
    inst = np.zeros((32, 32), np.int32)
    inst[2:8, 2:8], inst[20:26, 20:30] = 1, 2
    if lizard:
        mat = {"inst_map": inst, "id": np.array([[1], [2]]), "class": np.array([[3], [6]])}
    else:
        mat = {"inst_map": inst.astype(float), "type_map": np.where(inst == 1, 2, np.where(inst == 2, 5, 0))}
    savemat(tmp_path / "Train" / "Labels" / "train_1.mat", mat)
    tiles = load_dataset(tmp_path)
    assert tiles.source.startswith("lizard" if lizard else "consep")
    np.testing.assert_array_equal(tiles.instances[0], inst)
    assert tiles.types[0][4, 4] == (3 if lizard else 2) and tiles.types[0][22, 25] == (6 if lizard else 5)
    assert tiles.mpp == (0.5 if lizard else 0.25)


def test_folder_pairs(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(_image()).save(tmp_path / "images" / "a.png")
    mask = np.zeros((32, 32), np.uint16)
    mask[3:9, 3:9] = 300  # ids above 255 need 16 bits
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    tiles = load_dataset(tmp_path, mpp=0.5)
    assert tiles.source.startswith("folder") and tiles.instances[0][5, 5] == 300 and tiles.mpp == 0.5

    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(_image()).save(flat / "b.png")
    tifffile.imwrite(flat / "b_mask.tif", mask.astype(np.int32))
    tiles = load_dataset(flat)
    assert len(tiles) == 1 and tiles.instances[0].max() == 300 and tiles.mpp is None


def test_unknown_layout_lists_expected(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path)
    for name in list_layouts():
        assert name in str(err.value)
    assert "masks.npy" in str(err.value) and "XML" in str(err.value)
    with pytest.raises(DatasetError, match="not a folder"):
        load_dataset(tmp_path / "missing")
    with pytest.raises(DatasetError, match="unknown dataset layout"):
        load_dataset(tmp_path, layout="nope")


def test_mismatched_mask_refused(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.fromarray(_image()).save(tmp_path / "images" / "a.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "masks" / "a.png")
    with pytest.raises(DatasetError, match="does not match"):
        load_dataset(tmp_path)


def test_rasterize_later_polygon_wins():
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    lab = rasterize_polygons([square, square + 5], (20, 20))
    assert lab[2, 2] == 1 and lab[7, 7] == 2 and lab[18, 18] == 0
