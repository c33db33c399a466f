from visem.experiments import format_table


def test_table_puts_paper_values_beside_ours():
    results = {
        "experiment": "x",
        "config": {},
        "rows": [{"model": "pse", "latent_dim": 10, "acc": 95.04, "rec": 80.0},
                 {"model": "cvae", "latent_dim": 10, "acc": None, "rec": 70.5}],
        "paper": [{"model": "pse", "latent_dim": 10, "acc": 96.0, "rec": 82.8},
                  {"model": "jmvae", "latent_dim": 10, "acc": 90.0}],
    }
    lines = format_table(results).splitlines()
    assert lines[1].split() == ["model", "latent_dim", "acc", "rec"]
    assert lines[3].split() == ["pse", "10", "95.04", "(96.00)", "80.00", "(82.80)"]
    assert lines[4].split() == ["cvae", "10", "-", "70.50"]
    assert lines[6].startswith("paper rows without")
    assert lines[7].split() == ["model", "latent_dim", "acc"] and lines[-1].split() == ["jmvae", "10", "90.00"]


def test_table_merges_std_and_marks_quick_runs():
    from visem.experiments import QUICK_BANNER

    results = {"experiment": "x", "config": {"quick": True, "settings": {"train": {"steps": 5}}},
               "rows": [{"model": "a", "rsum": 120.0, "rsum_std": 3.5, "n_runs": 5}], "paper": []}
    lines = format_table(results).splitlines()
    assert lines[0] == QUICK_BANNER and lines[-1] == QUICK_BANNER
    assert lines[2].split() == ["model", "rsum", "n_runs"]
    assert lines[4].split() == ["a", "120.00", "±", "3.50", "5"]
    assert "train.steps=5" in lines[-2]
