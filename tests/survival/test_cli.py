"""`slidestream survival fit` on the real rossi table."""

from __future__ import annotations

from PIL import Image

from slidestream.cli import main


def test_fit_prints_summary_and_writes_plot(rossi, tmp_path, capsys):
    table = tmp_path / "rossi.csv"
    frame = rossi.copy()
    frame.loc[3, "age"] = None  # one incomplete row is dropped and reported
    frame.to_csv(table, index=False)
    plot = tmp_path / "km.png"
    code = main(["survival", "fit", str(table), "--time", "week", "--event", "arrest",
                 "--covariates", "fin", "age", "prio", "--groups", "3", "--plot", str(plot)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "431 samples" in out and "dropped 1 row" in out
    assert "prio" in out and "C-index" in out and "log-rank" in out and "hazard ratio" in out
    image = Image.open(plot)
    assert image.size[0] > 500


def test_fit_names_missing_columns(rossi, tmp_path, capsys):
    table = tmp_path / "rossi.csv"
    rossi.to_csv(table, index=False)
    assert main(["survival", "fit", str(table), "--time", "weeks", "--event", "arrest"]) == 2
    assert "weeks" in capsys.readouterr().err


def test_fit_reports_bad_events(tmp_path, capsys):
    table = tmp_path / "bad.csv"
    table.write_text("t,e,x\n1,0,1\n2,2,3\n3,1,2\n4,1,5\n")
    assert main(["survival", "fit", str(table), "--time", "t", "--event", "e"]) == 2
    assert "0 (censored) or 1" in capsys.readouterr().err
