"""The global quantile LSTM: one network for every series, VM size and metric.

An LSTM reads the recent context (scaled values and calendar); its last state, the static
features (size, and embeddings of the metric, workload class and customer) and the per-step future
features (the same step a day and a week earlier, its time of day, an event flag) feed a small
head that outputs every quantile of every horizon step at once. Quantiles are built as a base plus
non-negative increments, so they never cross, and the base is an offset from the last value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from presculpt.coordinator.forecast.features import CONTEXT_FEATURES, FUTURE_FEATURES, SUMMARY_FEATURES


@dataclass(frozen=True)
class ModelConfig:
    horizon: int = 12
    quantiles: tuple[float, ...] = (0.1, 0.5, 0.9, 0.99)
    hidden: int = 48
    head_hidden: int = 128
    embedding: int = 4
    n_metrics: int = 2
    n_classes: int = 32  # workload classes (0 = unknown; more are hashed into this many)
    n_customers: int = 128  # customers (0 = unknown; hashed likewise)
    n_series: int = 1024  # series keys, hashed into this many buckets
    # Width of a per-series embedding; 0 (the default) leaves it out: on the Bitbrains trace it
    # learned each VM's level during training and forecast worse when the levels later moved.
    series_embedding: int = 0
    dropout: float = 0.1  # in the head while training

    def as_dict(self) -> dict:
        return asdict(self)


class QuantileLSTM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.lstm = nn.LSTM(CONTEXT_FEATURES, config.hidden, batch_first=True)
        self.metric_embedding = nn.Embedding(config.n_metrics, config.embedding)
        self.class_embedding = nn.Embedding(config.n_classes, config.embedding)
        self.customer_embedding = nn.Embedding(config.n_customers, config.embedding)
        # Each series' own quirks (how spiky, how periodic), learned while training; it starts at
        # zero, so a series that appears after training is forecast from its features alone.
        self.series_embedding = None
        if config.series_embedding:
            self.series_embedding = nn.Embedding(config.n_series, config.series_embedding)
            nn.init.zeros_(self.series_embedding.weight)
        head_in = config.hidden + 3 * config.embedding + config.series_embedding + 1 + SUMMARY_FEATURES + config.horizon * FUTURE_FEATURES
        self.head = nn.Sequential(
            nn.Linear(head_in, config.head_hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.head_hidden, config.head_hidden),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(config.head_hidden, config.horizon * len(config.quantiles)),
        )
        self.register_buffer("levels", torch.tensor(config.quantiles, dtype=torch.float32))

    def forward(self, context, future, size, summary, metric, workload_class, customer, series) -> torch.Tensor:
        """Quantiles in units of the series scale: (N, horizon, len(quantiles))."""
        _, (state, _) = self.lstm(context)
        parts = [
            state[-1],
            self.metric_embedding(metric),
            self.class_embedding(workload_class % self.config.n_classes),
            self.customer_embedding(customer % self.config.n_customers),
            size,
            summary,
            future.flatten(1),
        ]
        if self.series_embedding is not None:
            parts.append(self.series_embedding(series % self.config.n_series))
        features = torch.cat(parts, dim=1)
        raw = self.head(features).view(-1, self.config.horizon, len(self.config.quantiles))
        # The head forecasts the change from the last value (a skip connection to the naive
        # forecast): what the series does next is mostly where it is now.
        base = raw[..., :1] + context[:, -1:, :1]
        steps = nn.functional.softplus(raw[..., 1:])
        return torch.cat([base, base + torch.cumsum(steps, dim=-1)], dim=-1)

    def loss(self, predicted: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
             ) -> torch.Tensor:
        """Mean pinball loss over quantiles, steps and series (target: (N, horizon), scaled),
        each series weighted by ``weight`` (N,) when given."""
        error = target.unsqueeze(-1) - predicted
        loss = torch.maximum(self.levels * error, (self.levels - 1) * error).mean(dim=(1, 2))
        return loss.mean() if weight is None else (loss * weight).sum() / weight.sum()
