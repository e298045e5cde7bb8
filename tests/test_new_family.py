"""Adding a likelihood is one class: the README's Gumbel example trains, evaluates and is listed."""

import pytest
import torch
from torch.distributions import Independent

from vaestudy.config import RunConfig
from vaestudy.evaluate import evaluate
from vaestudy.likelihoods import REGISTRY, Likelihood
from vaestudy.study import expand_study
from vaestudy.tables import collect, summarise
from vaestudy.train import train


@pytest.fixture
def gumbel():
    class Gumbel(Likelihood):  # exactly the README's example
        """prod Gumbel(x_i; mu_i(z), b): skewed pixel noise."""

        name = "gumbel"

        def __init__(self, num_pixels: int, scale: float = 0.1):
            super().__init__(num_pixels)
            self.register_buffer("b", torch.tensor(scale))

        def distribution(self, o):
            return Independent(torch.distributions.Gumbel(o, self.b), 1)

    yield Gumbel
    del REGISTRY["gumbel"]


def test_a_new_family_is_one_class(tmp_path, gumbel):
    study = {"seeds": [1], "arenas": {"continuous": [{"family": "gumbel", "scale": [0.05, 0.2]}]}}
    assert [r.name for r in expand_study(study)] == [
        "continuous/gumbel-s0.05/seed1",
        "continuous/gumbel-s0.2/seed1",
    ]
    config = RunConfig(family="gumbel", params={"scale": 0.2}, epochs=2, hidden=[16], latent=2, device="cpu")
    assert train(config, tmp_path / "run", progress=False)["status"] == "ok"
    metrics = evaluate(tmp_path / "run", tmp_path / "m.json", k=20, device="cpu")["metrics"]
    x, o = torch.rand(3, 64), torch.randn(3, 64)
    expected = torch.distributions.Gumbel(o, 0.2).log_prob(x).sum(-1)
    torch.testing.assert_close(REGISTRY["gumbel"](64, 0.2).distribution(o).log_prob(x), expected)
    assert metrics["ll_iwae"] >= metrics["elbo"] - 1.0
    # its parameter is a column of the tidy tables, as every registered family's is
    table = summarise(collect([tmp_path / "m.json"], tmp_path))
    assert set(table[table.metric == "elbo"].scale) == {0.2}


def test_a_family_without_a_docstring_is_listed(capsys):
    from vaestudy.cli import main

    class Plain(Likelihood):
        name = "plain_no_doc"

        def distribution(self, o):
            return Independent(torch.distributions.Normal(o, 1.0), 1)

    try:
        assert main(["families"]) == 0
    finally:
        del REGISTRY["plain_no_doc"]
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("plain_no_doc")]
    assert len(lines) == 1 and "arenas: continuous" in lines[0]


def _typed(study: dict) -> dict:
    entry = study["arenas"]["continuous"][0]
    typed = {"family": entry["family"], "power": [int(p) for p in entry["power"]], "squared": True}
    return {**study, "arenas": {"continuous": [typed]}}


def test_integer_and_boolean_parameters_of_a_new_family_read_from_text():
    """Snakemake's --config passes a family's parameters as text: a new family's integer and
    boolean parameters get their types, as a float one does, and a value of another type is a
    user error that names the type."""
    from vaestudy.errors import UserError
    from vaestudy.likelihoods import build_likelihood

    class Tempered(Likelihood):
        """N(x; mu(z), 1) raised to 1/power, optionally squared."""

        name = "tempered_test"

        def __init__(self, num_pixels: int, power: int = 1, squared: bool = False, scale: float = 1.0):
            super().__init__(num_pixels)
            self.power, self.squared, self.scale = power, squared, scale

        def distribution(self, o):
            return Independent(torch.distributions.Normal(o, self.scale), 1)

    try:
        study = {
            "seeds": [1],
            "arenas": {"continuous": [{"family": "tempered_test", "power": ["2", "3"], "squared": "true"}]},
        }
        runs = expand_study(study)
        # named as the values written as numbers and booleans in YAML are
        assert [r.name for r in runs] == [r.name for r in expand_study(_typed(study))]
        assert [r.name for r in runs] == [
            "continuous/tempered_test-p2-squaredTrue/seed1",
            "continuous/tempered_test-p3-squaredTrue/seed1",
        ]
        assert [r.config.params for r in runs] == [
            {"power": 2, "squared": True, "scale": 1.0},
            {"power": 3, "squared": True, "scale": 1.0},
        ]
        assert isinstance(runs[0].config.params["power"], int)
        for params, message in [
            ({"power": "2.5"}, "power must be an integer, got '2.5'"),
            ({"power": 2.0}, "power must be an integer, got 2.0"),
            ({"squared": "maybe"}, "squared must be true or false, got 'maybe'"),
            ({"squared": 1}, "squared must be true or false, got 1"),
            ({"scale": True}, "scale must be a finite number, got True"),
        ]:
            with pytest.raises(UserError, match=message):
                build_likelihood("tempered_test", 4, params)
    finally:
        del REGISTRY["tempered_test"]
