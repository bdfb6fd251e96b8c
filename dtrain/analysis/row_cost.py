"""What training a `dtrain reproduce` row costs: epochs and images seen, read from its resolved recipe
(so the numbers are the recipe's, not a second copy of them). `dtrain reproduce --list` prints them
next to each row's reference error, the table a user chooses a recipe from."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from dtrain.analysis.paper_row import PaperRow
from dtrain.resolve import load_config

# Training-set sizes of the rows' datasets: ILSVRC-2012 train, CIFAR-10/100 train.
TRAIN_IMAGES = {"ImageNet": 1_281_167, "CIFAR-10": 50_000, "CIFAR-100": 50_000}


@dataclass(frozen=True)
class Cost:
    epochs: float
    images: int
    at_most: bool = False  # R1 ImageNet's plateau rule may stop before its iteration cap

    def describe(self) -> tuple[str, str]:
        """(epochs, images seen in millions), as --list prints them."""
        bound = "<=" if self.at_most else ""
        return f"{bound}{self.epochs:.0f}", f"{bound}{self.images / 1e6:.1f}M"


@cache
def recipe_cost(recipe: str, dataset: str) -> Cost:
    """One run of `recipe`: max_iters x global batch, or epochs x the training set."""
    config = load_config(recipe, [])
    schedule, per_epoch = config.schedule, TRAIN_IMAGES[dataset]
    if schedule.max_iters:
        images = schedule.max_iters * config.optim.batch_size
        return Cost(images / per_epoch, images, at_most=schedule.kind == "plateau")
    epochs = schedule.epochs or 0
    return Cost(float(epochs), epochs * per_epoch)


def row_cost(row: PaperRow) -> Cost:
    """The row's training cost; an ensemble's is the sum of its members'. A row's overrides change
    the network (model.options), not the schedule, so the recipe's cost is the row's."""
    runs = [recipe for recipe, _ in row.members] or [row.recipe]
    costs = [recipe_cost(recipe, row.dataset) for recipe in runs]
    return Cost(sum(c.epochs for c in costs), sum(c.images for c in costs), any(c.at_most for c in costs))
