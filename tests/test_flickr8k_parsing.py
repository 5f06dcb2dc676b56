"""The token and split files: the format, its two known quirks, and errors that name the line."""

from pathlib import Path

import pytest
from conftest import FLICKR8K, needs_flickr8k

from imagelingo.data.flickr8k import locate_layout, parse_split_file, parse_token_file
from imagelingo.errors import ImageLingoError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_tab_separated_lines_are_grouped_by_image(tmp_path):
    tokens = parse_token_file(
        write(tmp_path / "t.txt", "a.jpg#0\tA dog .\na.jpg#1\tA cat .\nb.jpg#0\tA bird .\n")
    )
    assert tokens.captions == {"a.jpg": ["A dog .", "A cat ."], "b.jpg": ["A bird ."]}
    assert not tokens.repaired


def test_space_instead_of_tab_is_repaired_and_counted(tmp_path):
    tokens = parse_token_file(write(tmp_path / "t.txt", "a.jpg#0 A child in a pink dress .\n"))
    assert tokens.captions == {"a.jpg": ["A child in a pink dress ."]}
    assert tokens.repaired == {"space instead of TAB after caption id": 1}


def test_id_with_suffix_is_kept_as_its_own_id(tmp_path):
    tokens = parse_token_file(write(tmp_path / "t.txt", "x.jpg.1#0\tA man .\n"))
    assert tokens.captions == {"x.jpg.1": ["A man ."]}


def test_line_without_separator_is_an_error_naming_file_and_line(tmp_path):
    path = write(tmp_path / "t.txt", "a.jpg#0\tA dog .\nthis line has no id\n")
    with pytest.raises(ImageLingoError, match=r"t\.txt line 2: expected '<image>#<n><TAB>"):
        parse_token_file(path)


def test_empty_caption_is_skipped_counted_and_named(tmp_path):
    tokens = parse_token_file(write(tmp_path / "t.txt", "a.jpg#0\t\na.jpg#1\tA dog .\n"))
    assert tokens.captions == {"a.jpg": ["A dog ."]}
    assert tokens.skipped_lines == {"empty caption": 1}
    assert tokens.skipped_line_places == [
        {"line": f"{tmp_path / 't.txt'} line 1", "reason": "empty caption"}
    ]


def test_missing_split_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(ImageLingoError, match="Flickr_8k.devImages.txt"):
        parse_split_file(tmp_path / "Flickr_8k.devImages.txt")


def test_directory_that_does_not_exist_is_an_error(tmp_path):
    with pytest.raises(ImageLingoError, match="does not exist"):
        locate_layout(tmp_path / "nowhere")


def test_layout_without_a_split_file_is_an_error(synthetic_source, tmp_path):
    import shutil

    copy = shutil.copytree(synthetic_source, tmp_path / "copy")
    (copy / "Flickr_8k.testImages.txt").unlink()
    with pytest.raises(ImageLingoError, match="missing split file Flickr_8k.testImages.txt"):
        locate_layout(copy)


@needs_flickr8k
def test_real_token_file_has_8092_ids_and_three_repaired_lines():
    tokens = parse_token_file(FLICKR8K / "Flickr8k.token.txt")
    assert len(tokens.captions) == 8092
    assert sum(len(c) for c in tokens.captions.values()) == 40460
    assert tokens.repaired == {"space instead of TAB after caption id": 3}
    assert "2258277193_586949ec62.jpg.1" in tokens.captions


@needs_flickr8k
def test_real_split_files_are_the_official_6000_1000_1000():
    layout = locate_layout(FLICKR8K)
    sizes = {s: len(parse_split_file(p)) for s, p in layout.split_files.items()}
    assert sizes == {"train": 6000, "dev": 1000, "test": 1000}
