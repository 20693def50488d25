"""The epoch record's two fixed sinks (core/sinks.py): log.csv's formats and the epoch line, as the
training scripts wrote them inline before (report.py and the tests read both). TensorBoard:
tests/test_tensorboard.py."""
from core import sinks
from core.fileio import read_csv


def record(epoch, is_best):
    values = {"lr": 0.00123456789, "train_loss": 1.23456789, "val_loss": 0.5, "val_acc": 0.25, "train_seconds": 2.346,
              "val_seconds": 0.5, "other_seconds": 0.001}
    return sinks.EpochRecord(epoch, "adam", values, is_best, images_per_second=1234.56)


def test_log_csv_formats_and_resumed_rows(tmp_path):
    path = tmp_path / "log.csv"
    log = sinks.CSVFile(str(path))
    log.write(record(1, True))
    log.write(record(2, False))
    assert path.read_text().splitlines() == [
        "epoch,phase,lr,train_loss,val_loss,val_acc,train_seconds,val_seconds,other_seconds",
        "1,adam,0.00123457,1.234568,0.500000,0.250000,2.35,0.50,0.00",
        "2,adam,0.00123457,1.234568,0.500000,0.250000,2.35,0.50,0.00"]
    resumed = sinks.CSVFile(str(path), saved_epoch=1)  # read at once: rows after the saved epoch go
    resumed.write(record(2, True))
    assert [r["epoch"] for r in read_csv(path)] == ["1", "2"]


def test_epoch_line(capsys):
    sinks.Console(("train_loss", "val_loss", "val_acc"), 0).write(record(3, True))
    sinks.Console(("val_acc",), 1).write(record(4, False))
    assert capsys.readouterr().out.splitlines() == [
        "epoch 3: adam lr 0.00123 train_loss 1.2346 val_loss 0.5000 val_acc 0.2500 (best) [1235 img/s]",
        "epoch 4: adam lr 0.00123 val_acc 0.2500 [1234.6 img/s]"]
