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
    assert "jmvae" in lines[-1] and lines[-1].startswith("paper rows without")
