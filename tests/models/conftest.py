import pytest

from analysis.ntuple import feature_matrix
from analysis.partition import partition_indices


@pytest.fixture(scope="session")
def background_partitions(skimmed, quickstart):
    """Skimmed background (generator + skim of the session fixtures) split as the pipeline splits it."""
    cols, _ = skimmed["background"]
    x = feature_matrix(cols)
    idx = partition_indices(len(x), quickstart.partition, quickstart.seed, "background")
    return {p: x[i] for p, i in idx.items()}
