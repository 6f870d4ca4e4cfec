"""What a preview says about a call's environment (a plain model: ``toolkit.plan`` embeds it)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from toolkit.infra.fields import unset

Status = Literal["base", "cached", "build"]


def human_size(size: float) -> str:
    for unit in ("B", "kB", "MB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


class PackageLine(BaseModel):
    """One package of a plan, and where it came from."""

    name: str
    version: str
    source: str
    """auto, packages, requirements or dependency."""
    origin: str = ""
    state: Literal["install", "in base"] = "install"
    size: int | None = None


class EnvironmentSummary(BaseModel):
    """What a preview says about a call's environment."""

    status: Status = Field(description="base: nothing to add; cached: built before; build: built by this call.")
    base: str
    reference: str = Field(description="The image or interpreter the job runs.")
    hash: str | None = None
    stack: str | None = None
    registry: str | None = unset("The repository the image is pushed to; the job pulls it by digest.")
    packages: list[PackageLine] = Field(default_factory=list)

    def lines(self) -> list[str]:
        what = {
            "base": "nothing to add; the job runs the base as is",
            "cached": f"cached ({self.reference}, stack {self.stack})",
            "build": f"will be built: {self.reference} (stack {self.stack})",
        }[self.status]
        rows = [f"Environment: {what}", f"    base: {self.base}"]
        if self.registry:
            rows.append(f"    pushed to: {self.registry} (the job pulls it by digest)")
        for package in self.packages:
            size = f", {human_size(package.size)}" if package.size else ""
            where = f" - {package.origin}" if package.origin else ""
            rows.append(f"    {package.state:<8} {package.name}=={package.version}  [{package.source}{where}{size}]")
        return rows
