"""The fixture of the shop example's tests: the shop running, shared by the tests of its three services."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from shop_services import Shop, running_shop


@pytest.fixture(scope="session")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shop]:
    with running_shop(tmp_path_factory) as running:
        yield running
