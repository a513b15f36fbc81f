"""Starting a search from the console: the form of `ideaforge run`, run as a detached engine."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, Select, Static

from console.launch import SOURCE_ROOT

#: Listed first when shipped: the demo's environment, the one the README starts with.
FIRST_ENVIRONMENT = "nanogpt"


def shipped_environments() -> list[str]:
    root = SOURCE_ROOT / "environments"
    if not root.is_dir():
        return []
    return sorted((p.parent.name for p in root.glob("*/environment.toml")),
                  key=lambda name: (name != FIRST_ENVIRONMENT, name))


class NewSearchScreen(ModalScreen[str | None]):
    """Dismisses with a one-line note about the engine it started, or None."""

    CSS_PATH = "new_search.tcss"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "start", "Start", priority=True),
    ]

    def __init__(self, workspace: Path, last_env: tuple[str, str] | None = None) -> None:
        """`last_env`: (name, folder) of the environment of the workspace's most recent
        search, the form's default (the first listed without one)."""
        super().__init__()
        self.workspace = workspace
        self.last_env = last_env

    def compose(self) -> ComposeResult:
        envs = shipped_environments()
        chosen: str | None = envs[0] if envs else None
        folder = ""
        if self.last_env:
            name, path = self.last_env[0], Path(self.last_env[1]).expanduser()
            shipped = path.resolve().parent == SOURCE_ROOT / "environments"
            if (shipped or not path.is_dir()) and name in envs:
                chosen = name
            elif (path / "environment.toml").is_file():
                chosen, folder = None, str(path)
        with Vertical(id="dialog"):
            yield Static("Start a search", id="title")
            with VerticalScroll(id="form-scroll"), Grid(id="form"):
                yield Label("environment")
                yield Select([(e, e) for e in envs], value=chosen or Select.NULL,
                             allow_blank=True, id="env")
                yield Label("…or a folder")
                yield Input(folder, placeholder="path to a folder with environment.toml",
                            id="env-path")
                yield Label("name")
                yield Input(placeholder="(default: ENV-N)", id="name")
                yield Label("profile")
                yield Input("smoke", id="profile")
                yield Label("model")
                yield Input("catalog", placeholder="a litellm model id, or catalog",
                            id="model")
                yield Label("coder model")
                yield Input(placeholder="(default: the model)", id="coder-model")
                yield Label("API base")
                yield Input(placeholder="(optional) http://127.0.0.1:8000/v1", id="api-base")
                yield Label("epochs")
                yield Input("3", type="integer", id="epochs")
                yield Label("ideas per epoch")
                yield Input("10", type="integer", id="ideas")
                yield Label("hosts file")
                yield Input(placeholder="(optional) hosts.toml: GPU hosts over SSH",
                            id="hosts")
                yield Label("gates")
                with Horizontal(id="gates"):
                    yield Checkbox("no gates (--auto)", id="auto")
                    yield Checkbox("review diffs too", id="review-diffs")
            yield Static("", id="problem")
            with Horizontal(id="buttons"):
                yield Button("Start (ctrl+s)", variant="primary", id="start")
                yield Button("Cancel (esc)", id="cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.action_start()
        else:
            self.action_cancel()

    def _value(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", Input).value.strip()

    def arguments(self) -> tuple[str, list[str], str] | str:
        """(environment, options, name) for `ideaforge run`, or a problem to show."""
        env = self._value("env-path")
        if not env:
            chosen = self.query_one("#env", Select).value
            env = "" if chosen is Select.NULL else str(chosen)
        if not env:
            return "choose an environment, or give a folder"
        if "/" in env and not (Path(env).expanduser() / "environment.toml").is_file():
            return f"{env} has no environment.toml"
        options: list[str] = []
        for widget_id, flag in (("profile", "--profile"), ("model", "--model"),
                                ("coder-model", "--coder-model"), ("api-base", "--api-base")):
            if self._value(widget_id):
                options += [flag, self._value(widget_id)]
        for widget_id, flag in (("epochs", "--epochs"), ("ideas", "--ideas-per-epoch")):
            value = self._value(widget_id)
            if not value.isdigit() or int(value) < 1:
                return f"{flag} must be a whole number of at least 1"
            options += [flag, value]
        hosts = self._value("hosts")
        if hosts:
            if not Path(hosts).expanduser().is_file():
                return f"no hosts file at {hosts}"
            options += ["--hosts", str(Path(hosts).expanduser().resolve())]
        if self.query_one("#auto", Checkbox).value:
            options.append("--auto")
        if self.query_one("#review-diffs", Checkbox).value:
            options.append("--review-diffs")
        env_ref = str(Path(env).expanduser().resolve()) if "/" in env else env
        return env_ref, options, self._value("name")

    def action_start(self) -> None:
        from console.launch import run_search

        args = self.arguments()
        if isinstance(args, str):
            self.query_one("#problem", Static).update(args)
            return
        env, options, name = args
        try:
            proc, log = run_search(self.workspace, env, options, name or None)
        except OSError as exc:  # e.g. the workspace is a file, or its logs cannot be written
            self.query_one("#problem", Static).update(f"could not start the engine: {exc}")
            return
        follow = getattr(self.app, "follow_engine", None)
        if follow is not None:
            follow(proc, f"the new search on {env}", log)
        self.dismiss(f"engine pid {proc.pid} starts the search on {env}; it appears here "
                     f"once it is created (log: {log})")

    def action_cancel(self) -> None:
        self.dismiss(None)
