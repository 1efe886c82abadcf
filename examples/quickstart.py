"""A small real training run, tracked by mlop.

A two-layer MLP learns a noisy sine curve on the CPU. With no server and no key configured, mlop runs
offline: everything lands in ./.mlop/<project>/<run id>/ and can be read back with the `mlop` CLI.

Run: make demo   (or: .venv/bin/python examples/quickstart.py)
"""

from __future__ import annotations

import math

import torch
from torch import nn

import mlop


def main() -> None:
    torch.manual_seed(0)
    config = {"lr": 3e-3, "hidden": 64, "epochs": 30, "batch_size": 64, "samples": 2048}
    x = torch.rand(config["samples"], 1) * 2 * math.pi
    y = torch.sin(x) + 0.1 * torch.randn_like(x)
    train_x, val_x = x[:1792], x[1792:]
    train_y, val_y = y[:1792], y[1792:]

    model = nn.Sequential(nn.Linear(1, config["hidden"]), nn.Tanh(), nn.Linear(config["hidden"], 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    loss_fn = nn.MSELoss()

    run = mlop.init(project="quickstart", config=config, tags=["demo", "mlp"])
    step = 0
    for epoch in range(config["epochs"]):
        order = torch.randperm(len(train_x))
        for start in range(0, len(train_x), config["batch_size"]):
            batch = order[start : start + config["batch_size"]]
            loss = loss_fn(model(train_x[batch]), train_y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            run.log({"train/loss": loss.item(), "train/epoch": epoch}, step=step)
            step += 1
        with torch.no_grad():
            val_loss = loss_fn(model(val_x), val_y).item()
        run.log({"val/loss": val_loss, "val/rmse": math.sqrt(val_loss)}, step=step - 1)
        run.log({"val/summary": f"epoch {epoch}: val loss {val_loss:.4f}"}, step=step - 1)
    run.finish()

    reader = mlop.open_run(run.dir)
    final = [row["value"] for row in reader.metrics("val/loss")][-1]
    print(f"run {run.name} ({reader.status}): {step} steps, final val/loss {final:.4f}")
    print(f"stored in {run.dir}")
    print("look at it with:")
    print("  .venv/bin/mlop runs")
    print(f"  .venv/bin/mlop export {run.dir} --key val/loss")
    print("  .venv/bin/mlop ui          # charts in a browser")


if __name__ == "__main__":
    main()
