"""The review widget: suspects a page at a time, keep / drop / relabel each, every click saved as it is made.

    grid = Review(pd.concat([result.suspects, losses]), data, "runs/audit/decisions.csv", competition=competition)
    grid                     # in a notebook: shows itself (JupyterLab, Voila)
    grid.actions["img_0007.png"].value = "drop"       # what a click does, from Python (tests, scripts)

A page shows `page_size` cards: the image with its mask outlined, the given and suggested labels, the
issue and score, any further column of the table (a duplicate's twin, a shared mask's group, with
their images side by side), the keep / drop / relabel buttons and the new label's menu. Filters by
issue and class, a sort by score, the progress line ("118 of 240 decided"), bulk actions on the page
and keyboard shortcuts (with ipyevents) sit above. The magnifier opens the image file itself at a
readable size with its mask's outline (a slide, not its thumbnail).

Every decision goes to disk the moment it is made (kitlib.audit.decisions: appended to a log,
compacted into decisions.csv), so a kernel that dies loses nothing. Opening the review again shows
every earlier decision and starts at the first undecided sample; reviews of other runs or in other
sessions that write the same decisions.csv add up.
"""

from __future__ import annotations

import contextlib
import html
import io
import re
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import PIL.Image

from kitlib.audit.decisions import check, compact, record, summary
from kitlib.audit.grid import ENLARGE_TO, KNOWN_COLUMNS, caption, card_png, first_text, rows_of, view_png
from kitlib.data.dataset import ACTIONS
from kitlib.errors import KitError

BUTTONS = ("keep", "drop", "relabel")
KEYS = {"k": "keep", "d": "drop", "r": "relabel"}
HELP = ("keys (pointer over the review): <b>k</b> keep, <b>d</b> drop, <b>r</b> relabel (then next card); "
        "<b>&larr;</b>/<b>&rarr;</b> card; <b>n</b>/<b>p</b> page; <b>o</b> open the file; <b>Esc</b> close it")
STYLE = """<style>
.kit-card {border: 3px solid #ccc; border-radius: 5px; padding: 2px; background: white}
.kit-card.kit-keep {border-color: #2ca02c} .kit-card.kit-drop {border-color: #d62728; background: #fbeaea}
.kit-card.kit-relabel {border-color: #ff7f0e; background: #fff3e6}
.kit-card.kit-cursor {outline: 3px solid #1f77b4; outline-offset: 1px}
.kit-card pre, .kit-view pre {font-size: 10px; line-height: 1.2; margin: 0}
</style>"""
MAX_PARTNERS = 3  # twin or group members shown beside a card
CARD_PX = 220  # px: a card's least width (its three buttons)


def kind_of(row: pd.Series) -> str:
    """What a row is reviewed for: its audit issue, else 'high loss' (top_losses) or 'flat' (flattest)."""
    if first_text(row, "issue"):
        return row["issue"]
    return "high loss" if pd.notna(row.get("loss", np.nan)) else "flat" if "pixel_std" in row else "other"


def partners(table: pd.DataFrame, known: set[str]) -> dict[str, list[str]]:
    """Per sample, the samples its extra columns point at, to show beside it (at most MAX_PARTNERS).

    A cell naming samples (a duplicate's `twin`, or a group as ids separated by ';' or '|') points at
    them; a `group...` column holding a group key points at the table's other rows with that key.
    """
    extra = [c for c in table.columns if c not in KNOWN_COLUMNS]
    ids = list(table["sample_index"])
    found = {s: [] for s in ids}
    for column in extra:
        values = list(table[column])
        for sample, value in zip(ids, values):
            if value == "" if isinstance(value, str) else pd.isna(value):
                continue
            text = str(value)
            named = [text] if text in known else [v for v in re.split(r"\s*[;|]\s*", text) if v in known]
            if not named and str(column).lower().startswith("group"):
                named = [other for other, key in zip(ids, values) if key == value]
            found[sample] += [n for n in named if n != sample and n not in found[sample]]
    return {s: p[:MAX_PARTNERS] for s, p in found.items()}


def _files(competition) -> dict[str, tuple[str, str | None]]:
    """sample_index -> (image file, mask file or None) from a Competition or its sample table (None: {})."""
    if competition is None:
        return {}
    samples = getattr(competition, "samples", competition)
    masks = samples["mask"] if "mask" in samples else [None] * len(samples)
    return {s: (image, mask if isinstance(mask, (str, Path)) else None)
            for s, image, mask in zip(samples["sample_index"], samples["image"], masks)}


class Review:
    """The review: pages of cards (keep / drop / relabel), filters, progress, bulk actions, keys, the file viewer.

    Controls are reachable by sample_index (`actions[id].value = "drop"`, `labels[id].value = name`),
    so a test or a script drives it as a user would; `press("d")` is a key press. An undecided
    sample's action is None. Every change is written to `out_csv` at once (see kitlib.audit.decisions).

    `table`: rows with sample_index and label/given_label (suspects.csv, top_losses, flattest, or
    several concatenated; duplicates keep their first row). `data`: the TrainingData the audit scored.
    `competition`: its Competition (or sample table with image and mask columns), for opening files.
    `size`: thumbnail px; `columns`: cards per row at most (fewer when the page is narrower); `page_size`:
    cards per page; `view_size`: the viewer's px.
    """

    def __init__(self, table: pd.DataFrame, data, out_csv: str | Path, *, competition=None, size: int = 112,
                 columns: int = 6, page_size: int = 24, view_size: int = 1024):
        import ipywidgets as w

        if page_size < 1:
            raise KitError(f"page_size={page_size}: show at least one card a page.")
        table = table.drop_duplicates("sample_index").reset_index(drop=True)
        self.path, self.data, self.size = Path(out_csv), data, size
        self.page_size, self.view_size = page_size, view_size
        self.ids = list(table["sample_index"])
        self.rows = {s: row for s, (_, row) in zip(self.ids, table.iterrows())}
        self.kinds = {s: kind_of(row) for s, row in self.rows.items()}
        self._row_of = dict(zip(self.ids, rows_of(self.ids, data)))  # KitError for a sample not in data
        self.partners = partners(table, set(data.ids))
        self._files = _files(competition)
        self._batching, self._cards, self._thumbs = False, {}, {}
        self._decision_controls(compact(self.path))  # compact: folds in what a dead kernel left in the log
        self.status = w.Label()
        self.status.add_class("kit-progress")
        save = w.Button(description="Save decisions", icon="save",
                        tooltip="every click is already saved: this folds in other sessions' decisions too")
        save.on_click(self.save)
        cell = max(size, CARD_PX)  # as many columns as fit, at most `columns`
        self.grid = w.GridBox(layout=w.Layout(grid_template_columns=f"repeat(auto-fill, minmax({cell}px, 1fr))",
                                              max_width=f"{columns * (cell + 6)}px", grid_gap="6px"))
        self.keys = w.HTML(HELP + STYLE)
        self.widget = w.VBox([w.HBox([save, self.status]), *self._toolbar("loss" in table), self._viewer(),
                              self.grid, self.keys])
        self._events = _keyboard(self.widget, self.press)
        if self._events is None:
            self.keys.value = "keyboard shortcuts need ipyevents (pip install ipyevents)" + STYLE
        self.page, self.cursor, self.viewing = 0, None, None
        self._refilter()

    def _decision_controls(self, earlier: pd.DataFrame) -> None:
        """Per sample: the keep / drop / relabel buttons (None: undecided) and the new label's menu, as saved before."""
        import ipywidgets as w

        earlier = dict(zip(earlier["sample_index"], zip(earlier["action"], earlier["new_label"])))
        self.actions, self.labels = {}, {}
        for sample, row in self.rows.items():
            action, new_label = earlier.get(sample, (None, ""))
            if action is not None:
                check(sample, action, new_label, str(self.path))
            guess = new_label or first_text(row, "predicted", "suggested_label")
            guess = guess if guess in self.data.classes else first_text(row, "label", "given_label")
            self.actions[sample] = w.ToggleButtons(options=BUTTONS, value=action, style={"button_width": "66px"},
                                                   tooltips=["keep it (k)", "drop it from training (d)",
                                                             "train it under the label below (r)"])
            self.labels[sample] = w.Dropdown(options=list(self.data.classes), value=guess,
                                             disabled=action != "relabel",
                                             layout=w.Layout(width=f"{max(self.size, CARD_PX) - 60}px"))
            self.actions[sample].observe(partial(self._on_action, sample), names="value")
            self.labels[sample].observe(partial(self._on_label, sample), names="value")

    def _toolbar(self, with_loss: bool) -> list:
        """The rows above the cards: filters and sort; pages and bulk actions."""
        import ipywidgets as w

        present = list(dict.fromkeys(self.kinds.values()))
        self.issue_filter = w.Dropdown(options=["all issues", *present], description="issue",
                                       layout=w.Layout(width="220px"))
        given = {first_text(row, "label", "given_label") for row in self.rows.values()}
        self.class_filter = w.Dropdown(options=["all classes", *[c for c in self.data.classes if c in given]],
                                       description="class", layout=w.Layout(width="260px"))
        sorts = [("list order", "order"), ("score, highest first", "score"), ("score, lowest first", "-score")]
        self.sort = w.Dropdown(options=sorts + ([("loss, highest first", "loss")] if with_loss else []),
                               description="sort", layout=w.Layout(width="240px"))
        for control in (self.issue_filter, self.class_filter, self.sort):
            control.observe(lambda _: self._refilter(), names="value")
        self.prev, self.next = (w.Button(icon=f"chevron-{side}", tooltip=f"{word} page ({key})",
                                         layout=w.Layout(width="40px"))
                                for side, word, key in (("left", "previous", "p"), ("right", "next", "n")))
        self.prev.on_click(lambda _: self.go(self.page - 1))
        self.next.on_click(lambda _: self.go(self.page + 1))
        self.page_label = w.Label()
        bulk = [(f"{a} the undecided on this page", (a, "undecided")) for a in ("keep", "drop")]
        bulk += [(f"drop all {k} on this page", ("drop", k)) for k in present]
        self.bulk = w.Dropdown(options=bulk, layout=w.Layout(width="280px"))
        apply = w.Button(description="apply", tooltip="apply the chosen action to this page's cards")
        apply.on_click(lambda _: self.apply_to_page(*self.bulk.value))
        return [w.HBox([self.issue_filter, self.class_filter, self.sort]),
                w.HBox([self.prev, self.page_label, self.next, self.bulk, apply])]

    def _viewer(self):
        """The panel that shows one image file large in place of the cards (hidden until a card is opened)."""
        import ipywidgets as w

        self._view_title = w.HTML()
        self._view_image = w.Image(format="png")
        self._view_controls = w.HBox()
        close = w.Button(description="close (Esc)", icon="times")
        close.on_click(lambda _: self.close_view())
        self.viewer = w.VBox([w.HBox([close, self._view_title]), self._view_controls, self._view_image],
                             layout=w.Layout(display="none"))
        self.viewer.add_class("kit-view")
        return self.viewer

    # ------------------------------------------------------------------------------------- decisions

    def _write(self, rows: list[tuple[str, str, str]]) -> None:
        """Append decisions to the log (compacted now, or at the end of a bulk action); refresh the progress."""
        record(self.path, rows, compact_now=not self._batching)
        self._show_progress()

    def _on_action(self, sample: str, change: dict) -> None:
        """An action button was pressed (or set from Python): save it, restyle the card, move the cursor past it."""
        action = change["new"]
        self.labels[sample].disabled = action != "relabel"
        self._restyle(sample)
        if action is not None:
            self._write([(sample, action, self.labels[sample].value if action == "relabel" else "")])
            if not self._batching:
                self._advance(sample, turn_page=False)

    def _on_label(self, sample: str, change: dict) -> None:
        """The new-label menu changed: saved when the sample is being relabelled."""
        if self.actions[sample].value == "relabel":
            self._write([(sample, "relabel", change["new"])])

    @contextlib.contextmanager
    def _batch(self):
        """Record several decisions with one compaction at the end."""
        self._batching = True
        try:
            yield
        finally:
            self._batching = False
            compact(self.path)
            self._show_progress()

    def apply_to_page(self, action: str, which: str = "undecided") -> list[str]:
        """Set `action` on this page's cards: the undecided ones, 'all', or those of issue kind `which`; return them."""
        if action not in ACTIONS:
            raise KitError(f"action {action!r}: choose one of {', '.join(ACTIONS)}.")
        chosen = [s for s in self.shown if which == "all" or self.kinds[s] == which
                  or (which == "undecided" and self.actions[s].value is None)]
        with self._batch():
            for sample in chosen:
                self.actions[sample].value = action
        return chosen

    def decisions(self) -> pd.DataFrame:
        """This review's decisions in table order, the undecided left out: sample_index, action, new_label."""
        rows = [(s, self.actions[s].value, self.labels[s].value if self.actions[s].value == "relabel" else "")
                for s in self.ids if self.actions[s].value is not None]
        return pd.DataFrame(rows, columns=["sample_index", "action", "new_label"], dtype=object)

    def save(self, *_) -> Path:
        """Fold the log into decisions.csv now (each click is saved as it happens; this also takes other sessions')."""
        table = compact(self.path)
        self._show_progress(f" · saved {self.path}: {summary(table)} -> train with --decisions {self.path.name}")
        return self.path

    # ------------------------------------------------------------------------------------- pages

    def _refilter(self) -> None:
        """Apply the filters and the sort, then show the page of the first undecided sample."""
        kind, label, key = self.issue_filter.value, self.class_filter.value, self.sort.value
        order = [s for s in self.ids if kind in ("all issues", self.kinds[s])
                 and label in ("all classes", first_text(self.rows[s], "label", "given_label"))]
        if key != "order":
            column = key.lstrip("-")
            values = {s: pd.to_numeric(self.rows[s].get(column, np.nan), errors="coerce") for s in order}
            present = [s for s in order if pd.notna(values[s])]
            present.sort(key=lambda s: values[s], reverse=not key.startswith("-"))  # stable: ties keep list order
            order = present + [s for s in order if pd.isna(values[s])]
        self.order = order
        first = next((i for i, s in enumerate(order) if self.actions[s].value is None), 0)
        self.go(first // self.page_size, cursor=order[first] if order else None)

    @property
    def pages(self) -> int:
        """How many pages the filtered samples fill (at least 1)."""
        return max(1, -(-len(self.order) // self.page_size))

    def go(self, page: int, cursor: str | None = None) -> None:
        """Show page `page` (clipped to the pages there are); the cursor on `cursor`, else the first undecided card."""
        self.page = min(max(page, 0), self.pages - 1)
        self.shown = self.order[self.page * self.page_size:(self.page + 1) * self.page_size]
        self.grid.children = [self._card(s) for s in self.shown]
        self.page_label.value = f"page {self.page + 1} of {self.pages}"
        self.prev.disabled, self.next.disabled = self.page == 0, self.page == self.pages - 1
        undecided = [s for s in self.shown if self.actions[s].value is None]
        self._set_cursor(cursor if cursor in self.shown else (undecided or self.shown or [None])[0])
        self._show_progress()

    def _show_progress(self, note: str = "") -> None:
        decided = [s for s in self.ids if self.actions[s].value is not None]
        counts = pd.Series([self.actions[s].value for s in decided], dtype=object).value_counts()
        parts = ", ".join(f"{int(counts[a])} {a}" for a in ACTIONS if a in counts)
        shown = "" if len(self.order) == len(self.ids) else f" · {len(self.order)} match the filters"
        self.status.value = (f"{len(decided)} of {len(self.ids)} decided" + (f" ({parts})" if parts else "")
                             + shown + f" · every click is saved to {self.path.name}" + note)

    # ------------------------------------------------------------------------------------- cards

    def _thumb(self, sample: str, size: int) -> bytes:
        """The decoded pixels of `sample` as a PNG card image, mask outlined (cached)."""
        if (sample, size) not in self._thumbs:
            row = self._row_of.get(sample)
            if row is None:
                row = rows_of([sample], self.data)[0]
            masks = self.data.masks
            image = self.data.images[row].permute(1, 2, 0).numpy()
            mask = masks[row, 0].numpy() if masks is not None else None
            self._thumbs[sample, size] = card_png(image, mask, size)
        return self._thumbs[sample, size]

    def _card(self, sample: str):
        """The card of one sample (built on first show, then reused)."""
        import ipywidgets as w

        if sample in self._cards:
            return self._cards[sample]
        picture = w.Image(value=self._thumb(sample, self.size), format="png",
                          layout=w.Layout(width=f"{self.size}px", height=f"{self.size}px", object_fit="contain"))
        partners = self.partners[sample]  # one (a twin) beside the image, several (a group) in a row below it
        small = max(48, self.size * 2 // 3) if len(partners) == 1 else (CARD_PX - 16) // MAX_PARTNERS - 6
        thumbs = [w.VBox([w.Image(value=self._thumb(other, small), format="png",
                                  layout=w.Layout(width=f"{small}px", height=f"{small}px")),
                          w.HTML(f"<pre style='font-size:9px;margin:0'>{html.escape(other[:16])}</pre>")])
                  for other in partners]
        pictures = [w.HBox([picture, *thumbs])] if len(partners) <= 1 else [w.HBox([picture]), w.HBox(thumbs)]
        text = w.HTML(f"<div class='kit-caption' data-sample='{html.escape(sample, quote=True)}'>"
                      f"<pre>{html.escape(caption(self.rows[sample]))}</pre></div>")
        zoom = w.Button(icon="search-plus", tooltip="open the image file at a readable size, mask outlined (o)",
                        layout=w.Layout(width="36px"))
        zoom.add_class("kit-open")
        zoom.on_click(lambda _: self.open(sample))
        card = w.VBox([*pictures, text, self.actions[sample], w.HBox([self.labels[sample], zoom])])
        card.add_class("kit-card")
        self._cards[sample] = card
        self._restyle(sample)
        return card

    def _restyle(self, sample: str) -> None:
        """The card's border says its decision (grey: undecided)."""
        card = self._cards.get(sample)
        if card is not None:
            for action in ACTIONS:
                card.remove_class(f"kit-{action}")
            if self.actions[sample].value is not None:
                card.add_class(f"kit-{self.actions[sample].value}")

    def _set_cursor(self, sample: str | None) -> None:
        """Move the keyboard cursor (the blue frame) to `sample`; the viewer follows it when open."""
        if self.cursor in self._cards:
            self._cards[self.cursor].remove_class("kit-cursor")
        self.cursor = sample
        if sample in self._cards:
            self._cards[sample].add_class("kit-cursor")
        if self.viewing is not None and sample is not None and sample != self.viewing:
            self.open(sample)

    # ------------------------------------------------------------------------------------- keys, viewer

    def press(self, key: str) -> None:
        """A key press: k / d / r decide the cursor's card (then the next), arrows move, n / p page, o / Esc view."""
        if key in KEYS and self.cursor is not None:
            sample = self.cursor
            self.actions[sample].value = KEYS[key]
            self._advance(sample, turn_page=True)
        elif key in ("ArrowRight", "ArrowLeft") and self.cursor in self.order:
            index = min(max(self.order.index(self.cursor) + (1 if key == "ArrowRight" else -1), 0), len(self.order) - 1)
            self._show(self.order[index])
        elif key in ("n", "p"):
            self.go(self.page + (1 if key == "n" else -1))
        elif key in ("o", "Enter") and self.cursor is not None:
            self.open(self.cursor)
        elif key == "Escape":
            self.close_view()

    def _show(self, sample: str) -> None:
        """Put the cursor on `sample`, turning to its page when it is on another."""
        page = self.order.index(sample) // self.page_size
        if page != self.page:
            self.go(page, cursor=sample)
        else:
            self._set_cursor(sample)

    def _advance(self, sample: str, turn_page: bool) -> None:
        """After deciding `sample`: the cursor to the next card (to the next page only when `turn_page`)."""
        if sample not in self.order:
            return
        index = self.order.index(sample) + 1
        if index < len(self.order) and (turn_page or self.order[index] in self.shown):
            self._show(self.order[index])

    def open(self, sample: str) -> None:
        """Show `sample` large above the grid: its image file (kitlib.audit.grid.view_png) with the mask outline.

        Without a competition (or a file for the sample) the decoded pixels are enlarged instead.
        """
        files = self._files.get(sample)
        if files is not None:
            png, (width, height) = view_png(files[0], files[1], longest=self.view_size)
            where = f"{html.escape(Path(files[0]).name)}, {width} x {height} px"
            where += ", mask outlined" if files[1] else ""
        else:
            png = self._thumb(sample, min(self.view_size, ENLARGE_TO))
            where = "the decoded copy (pass competition= for the file)"
        self.viewing = sample
        self._view_image.value = png
        layout = self._view_image.layout  # the PNG's own width, shrunk to fit a narrower page
        layout.width, layout.max_width = f"{PIL.Image.open(io.BytesIO(png)).width}px", "100%"
        layout.height, layout.align_self = "auto", "flex-start"
        self._view_title.value = (f"<b>{html.escape(sample)}</b> &middot; {where}<pre>"
                                  f"{html.escape(caption(self.rows[sample]))}</pre>")
        self._view_controls.children = [self.actions[sample], self.labels[sample]]
        self.viewer.layout.display = "flex"
        self.grid.layout.display = "none"
        if sample != self.cursor:
            self._set_cursor(sample)

    def close_view(self) -> None:
        """Back from the viewer to the grid."""
        self.viewing = None
        self.viewer.layout.display = "none"
        self.grid.layout.display = None

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


def _keyboard(widget, press):
    """Key presses over `widget` call press(key) (ipyevents; None when it is not installed)."""
    try:
        from ipyevents import Event
    except ImportError:
        return None
    events = Event(source=widget, watched_events=["keydown"])
    last = {}

    def pressed(event: dict) -> None:
        # Voila can hand one key press to Python twice (two document listeners): the same timeStamp
        if event.get("timeStamp") is not None and event.get("timeStamp") == last.get("stamp"):
            return
        last["stamp"] = event.get("timeStamp")
        if not (event.get("ctrlKey") or event.get("altKey") or event.get("metaKey")):
            press(event.get("key", ""))

    events.on_dom_event(pressed)
    return events
