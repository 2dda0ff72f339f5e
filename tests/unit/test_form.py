"""The options form: what each user sees, and the posted form turned back into a request.

The form is rendered to HTML and read back with a small parser that submits it the way a
browser would (checked radios and checkboxes, selected options, hidden and text fields), so the
tests cover the template and :mod:`einfra_spawner.form` together, the way JupyterHub uses them.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from einfra_spawner import (
    OptionsError,
    ProfileSet,
    ResolvedOptions,
    UserContext,
    load_profiles,
    parse_profile_set,
    resolve_options,
)
from einfra_spawner.backend import GpuCapacity
from einfra_spawner.form import (
    CUSTOM_IMAGE_VALUE,
    FormView,
    ImageView,
    ProfileView,
    Select,
    TextInput,
    build_form,
    capacity_types,
    request_from_form,
    request_from_query,
)
from einfra_spawner.pricing import hourly_cost, money_text
from einfra_spawner.quantities import parse_cpu, parse_memory
from einfra_spawner.spawner_form import form_template
from einfra_spawner.usage import describe_quotas

PROFILES = Path(__file__).resolve().parents[2] / "profiles"
HUB = load_profiles(PROFILES / "hub")
COURSE = load_profiles(PROFILES / "course")
AI = load_profiles(PROFILES / "ai")

NOBODY = UserContext(name="nobody")
GPU_USER = UserContext(name="gina", groups=frozenset({"gpu"}))
EVERYTHING = UserContext(name="eve", groups=frozenset({"gpu", "meta", "projects"}))


# --- reading rendered HTML back ----------------------------------------------------------------


class RenderedForm(HTMLParser):
    """The controls, labels and text of a rendered form, and what a browser would submit."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.controls: list[dict[str, object]] = []
        self.label_for: list[str] = []
        self.ids: list[str] = []
        self.text_parts: list[str] = []
        self._select: dict[str, object] | None = None
        self._in_style = False
        self._glue = False  # inline elements (span) do not separate words
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: (v if v is not None else "") for k, v in attrs}
        self._in_style = tag in ("style", "script")
        self._glue = tag == "span"
        if "id" in attributes:
            self.ids.append(attributes["id"])
        if tag == "input":
            self.controls.append({"tag": "input", **attributes})
        elif tag == "select":
            self._select = {"tag": "select", "options": [], **attributes}
            self.controls.append(self._select)
        elif tag == "option" and self._select is not None:
            options = self._select["options"]
            assert isinstance(options, list)
            options.append(attributes)
        elif tag == "label" and "for" in attributes:
            self.label_for.append(attributes["for"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        self._in_style = False
        self._glue = tag == "span"

    def handle_data(self, data: str) -> None:
        if self._in_style:
            return
        if self._glue and self.text_parts:
            self.text_parts[-1] += data
        else:
            self.text_parts.append(data)
        self._glue = False

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.text_parts).split())

    def named(self, name: str) -> list[dict[str, object]]:
        return [c for c in self.controls if c.get("name") == name]

    def names(self) -> set[str]:
        return {str(c["name"]) for c in self.controls if "name" in c}

    def checked(self, name: str) -> list[str]:
        return [str(c["value"]) for c in self.named(name) if "checked" in c]

    def selected(self, name: str) -> str:
        (select,) = self.named(name)
        options = select["options"]
        assert isinstance(options, list)
        chosen = [o for o in options if "selected" in o] or options[:1]
        return str(chosen[0]["value"])

    def value(self, name: str) -> str:
        """The value of a single input (a number field's, as the page was built)."""
        (control,) = self.named(name)
        return str(control.get("value", ""))

    def control(self, name: str) -> dict[str, object]:
        (control,) = self.named(name)
        return control

    def option_values(self, name: str) -> list[str]:
        (control,) = self.named(name)
        options = control["options"]
        assert isinstance(options, list)
        return [str(o["value"]) for o in options]

    def submit(self, changes: Mapping[str, object] | None = None) -> dict[str, list[str]]:
        """What a browser posts, after the user changed ``changes`` (name -> value, or a set of
        values for checkboxes)."""
        changes = dict(changes or {})
        data: dict[str, list[str]] = {}
        for control in self.controls:
            name = str(control.get("name", ""))
            if not name:
                continue
            wanted = changes.get(name)
            if control["tag"] == "select":
                value = str(wanted) if wanted is not None else self.selected(name)
                assert value in self.option_values(name), (name, value)
                data.setdefault(name, []).append(value)
                continue
            kind = control.get("type", "text")
            value = str(control.get("value", "on"))
            if kind == "radio":
                assert not (value == wanted and "disabled" in control), (name, value)
                on = value == wanted if wanted is not None else "checked" in control
            elif kind == "checkbox":
                on = value in wanted if isinstance(wanted, set) else "checked" in control
            else:
                on = True
                value = str(wanted) if wanted is not None else value
            if on:
                data.setdefault(name, []).append(value)
        return data


def render(view: FormView) -> RenderedForm:
    return RenderedForm(form_template().render(form=view))


def form_for(
    profiles: ProfileSet, user: UserContext, request: object = None, **kwargs: object
) -> RenderedForm:
    last = resolve_options(profiles, user, request) if request is not None else None
    return render(build_form(profiles, user, last=last, **kwargs))  # type: ignore[arg-type]


def instance(tmp_files: dict[str, str]) -> ProfileSet:
    return parse_profile_set(tmp_files, source="test")


GATED = instance(
    {
        "instance.yaml": "name: gated\ndisplay_name: Gated <hub>\n"
        "gpu_types: {a40: {display_name: NVIDIA A40, resource: nvidia.com/gpu}}\n",
        "open.yaml": "slug: open\ndisplay_name: Open & free\nimage: quay.io/a/b:1\n"
        "cpu: [1, 2]\nmemory: [1Gi, {value: 2Gi, groups: [big]}]\n",
        "secret.yaml": "slug: secret\ndisplay_name: Secret\ngroups: [insiders]\n"
        "image: quay.io/a/b:1\ncpu: 1\nmemory: 1Gi\n",
        "gpu.yaml": "slug: gpu\ndisplay_name: Fixed GPU\nimage: quay.io/a/b:1\ncpu: 2\n"
        "memory: 2Gi\ngpu: a40\n",
    }
)


# --- what each user sees -----------------------------------------------------------------------


def test_a_user_outside_gpu_sees_no_gpu_choice() -> None:
    form = form_for(HUB, NOBODY)
    assert "jupyterlab--gpu" not in form.names()
    assert "jupyterlab--gpu_count" not in form.names()
    assert "GPU" not in form.text
    assert "NVIDIA" not in form.text


def test_a_gpu_user_sees_exactly_the_granted_gpu_types() -> None:
    form = form_for(HUB, GPU_USER)
    values = [str(c["value"]) for c in form.named("jupyterlab--gpu")]
    assert values == ["none", "mig-1g.10gb", "mig-2g.20gb", "a10", "a40", "a100", "h100"]
    assert form.option_values("jupyterlab--gpu_count") == ["1", "2", "3", "4"]


def test_mounts_appear_only_for_their_groups() -> None:
    # The shared scratch is open to everyone; the others only to their groups.
    assert [c["value"] for c in form_for(HUB, NOBODY).named("jupyterlab--mounts")] == ["scratch"]
    form = form_for(HUB, UserContext(name="p", groups=frozenset({"projects"})))
    assert [c["value"] for c in form.named("jupyterlab--mounts")] == ["scratch", "projects"]
    assert form.named("jupyterlab--mounts-shown")
    assert "MetaCentrum" not in form.text
    everything = form_for(HUB, EVERYTHING)
    assert [c["value"] for c in everything.named("jupyterlab--mounts")] == [
        "metacentrum",
        "scratch",
        "projects",
    ]


def test_profiles_and_choices_limited_to_groups_are_hidden() -> None:
    outsider = form_for(GATED, NOBODY)
    assert [c["value"] for c in outsider.named("profile")] == ["gpu", "open"]
    assert "Secret" not in outsider.text
    # One memory size is open to "big" only: the others see the remaining one as text.
    assert "open--memory" not in outsider.names()
    assert "Memory: 1 GiB" in outsider.text
    insider = form_for(GATED, UserContext(name="i", groups=frozenset({"insiders", "big"})))
    assert [c["value"] for c in insider.named("profile")] == ["gpu", "open", "secret"]
    assert insider.option_values("open--memory") == ["1Gi", "2Gi"]


def test_a_user_with_no_profile_gets_an_explanation() -> None:
    only_gated = instance(
        {
            "instance.yaml": "name: x\ndisplay_name: X\n",
            "a.yaml": "slug: a\ndisplay_name: A\ngroups: [g]\nimage: quay.io/a/b:1\ncpu: 1\nmemory: 1Gi\n",
        }
    )
    form = form_for(only_gated, NOBODY)
    assert form.named("profile") == []
    assert "No profile of this hub is open to your groups" in form.text


def test_fixed_options_are_text_not_controls() -> None:
    form = form_for(COURSE, UserContext(name="student"))
    assert form.names() == {"profile"}
    assert "Image: cerit.io/courses/intro-r:2025.1" in form.text
    assert "CPU: 2 CPUs" in form.text
    assert "Memory: 4 GiB" in form.text
    assert "A fresh home of 2 GiB at every start" in form.text
    fixed_gpu = form_for(GATED, NOBODY)
    assert "gpu--gpu" not in fixed_gpu.names()
    assert "GPU: NVIDIA A40" in fixed_gpu.text


def test_resources_that_come_with_the_gpu_are_explained() -> None:
    form = form_for(AI, NOBODY, capacity={"a100": GpuCapacity("a100", 3, 8)})
    assert "pytorch--cpu" not in form.names()
    assert "pytorch--memory" not in form.names()
    assert "CPU: comes with the GPU type" in form.text
    assert (
        "NVIDIA A100 80GB (with 16 CPUs and 128 GiB, up to 2, 3 of 8 free, 65.00 CZK per GPU-hour)"
        in form.text
    )


def test_defaults_are_selected() -> None:
    form = form_for(HUB, EVERYTHING)
    assert form.checked("profile") == ["jupyterlab"]
    assert form.selected("jupyterlab--image") == "scipy"
    assert form.value("jupyterlab--cpu") == "2"
    assert form.value("jupyterlab--memory") == "8"  # GiB, the field's unit
    assert form.checked("jupyterlab--gpu") == ["none"]
    assert form.checked("jupyterlab--mounts") == ["scratch", "projects"]  # the default mounts
    assert form.selected("rstudio--image") == "r-4.4"


def test_the_last_choices_are_selected() -> None:
    form = form_for(
        HUB,
        EVERYTHING,
        {
            "profile": "jupyterlab",
            "image": "datascience",
            "cpu": 8,
            "memory": "32Gi",
            "gpu": "a40",
            "gpu_count": 2,
            "mounts": ["metacentrum"],
        },
    )
    assert form.selected("jupyterlab--image") == "datascience"
    assert form.value("jupyterlab--cpu") == "8"
    assert form.value("jupyterlab--memory") == "32"
    assert form.checked("jupyterlab--gpu") == ["a40"]
    assert form.selected("jupyterlab--gpu_count") == "2"
    assert form.checked("jupyterlab--mounts") == ["metacentrum"]
    # Other profiles keep their own defaults.
    assert form.selected("rstudio--cpu") == "2"


def test_the_last_profile_is_selected() -> None:
    form = form_for(HUB, NOBODY, {"profile": "rstudio", "cpu": "4"})
    assert form.checked("profile") == ["rstudio"]
    assert form.selected("rstudio--cpu") == "4"
    assert form.value("jupyterlab--cpu") == "2"


def test_a_custom_image_is_remembered_in_its_field() -> None:
    form = form_for(HUB, NOBODY, {"image": "cerit.io/hubs/mine:2.0"})
    assert form.selected("jupyterlab--image") == CUSTOM_IMAGE_VALUE
    (field,) = form.named("jupyterlab--image-custom")
    assert field["value"] == "cerit.io/hubs/mine:2.0"


def test_reset_is_never_pre_checked() -> None:
    form = form_for(HUB, NOBODY, {"home": "reset"})
    (box,) = form.named("jupyterlab--home")
    assert box["type"] == "checkbox"
    assert box["value"] == "reset"
    assert "checked" not in box
    assert "Reset my home (your current home is kept aside)" in form.text


def test_reset_appears_only_where_the_profile_allows_it() -> None:
    assert not [n for n in form_for(COURSE, NOBODY).names() if n.endswith("--home")]
    assert not [n for n in form_for(GATED, NOBODY).names() if n.endswith("--home")]


def test_capacity_is_shown_next_to_each_gpu_type() -> None:
    capacity = {"a40": GpuCapacity("a40", 2, 2), "mig-1g.10gb": GpuCapacity("mig-1g.10gb", 0, 7)}
    form = form_for(HUB, GPU_USER, capacity=capacity)
    assert "NVIDIA A40 (up to 2, 2 of 2 free, 38.00 CZK per GPU-hour)" in form.text
    assert "NVIDIA A100 slice (MIG 1g.10gb) (up to 4, 0 of 7 free, 9.00 CZK per GPU-hour)" in form.text
    # No figure where the backend could not tell.
    assert "NVIDIA H100 (120.00 CZK per GPU-hour) Number of GPUs" in form.text
    assert "free" not in form_for(HUB, GPU_USER).text
    none_here = form_for(HUB, GPU_USER, capacity={"h100": GpuCapacity("h100", 0, 0)})
    assert "NVIDIA H100 (none on this cluster, 120.00 CZK per GPU-hour)" in none_here.text


def test_capacity_is_asked_only_for_types_the_user_can_see() -> None:
    assert capacity_types(HUB, NOBODY) == ()
    assert capacity_types(HUB, GPU_USER) == (
        "mig-1g.10gb",
        "mig-2g.20gb",
        "a10",
        "a40",
        "a100",
        "h100",
    )


def test_images_do_not_apply_on_a_backend_without_images() -> None:
    form = form_for(HUB, NOBODY, images_apply=False, servers_run_as="local processes")
    assert "Images do not apply on this hub (its servers run as local processes)." in form.text
    assert not [n for n in form.names() if "image" in n]


def test_every_control_has_a_label_and_ids_are_unique() -> None:
    for profiles in (HUB, COURSE, AI, GATED):
        form = form_for(profiles, EVERYTHING, capacity={})
        duplicates = [i for i, n in Counter(form.ids).items() if n > 1]
        assert not duplicates
        for control in form.controls:
            if control.get("type") == "hidden":
                continue
            assert control.get("id") in form.label_for, control


def test_profiles_and_groups_of_options_are_fieldsets_with_legends() -> None:
    html = form_template().render(form=build_form(HUB, EVERYTHING))
    assert html.count("<fieldset") == html.count("<legend") == html.count("</fieldset>")
    assert html.count('class="einfra-profile"') == 2
    assert 'type="radio" name="profile"' in html


def test_values_are_escaped() -> None:
    hostile = '"><script>alert(1)</script>'
    view = build_form(GATED, NOBODY)
    profile = view.profiles[0]
    select = Select(name="x--image", id="x--image", label="Image", options=())
    forged = dataclasses.replace(
        profile,
        display_name=hostile,
        image=ImageView(select=select, custom=TextInput(name="x", id="x", label="Custom", value=hostile)),
    )
    html = form_template().render(form=dataclasses.replace(view, profiles=(forged,)))
    assert "<script>alert" not in html
    assert "&#34;&gt;&lt;script&gt;" in html
    # Operator-written texts are escaped too.
    assert "Open &amp; free" in form_template().render(form=build_form(GATED, NOBODY))


def test_nothing_outside_the_view_reaches_the_page() -> None:
    view = build_form(GATED, NOBODY)
    assert isinstance(view.profiles[0], ProfileView)
    assert "Gated" not in render(view).text  # the instance name belongs to the hub's page


# --- the form posted back ----------------------------------------------------------------------


def resolved_from(
    form: RenderedForm, profiles: ProfileSet, user: UserContext, **changes: object
) -> tuple[dict[str, object], ResolvedOptions]:
    request = request_from_form(form.submit(changes), profiles, user)
    return request, resolve_options(profiles, user, request)


@pytest.mark.parametrize(
    ("profiles", "user"),
    [(HUB, NOBODY), (HUB, EVERYTHING), (COURSE, NOBODY), (AI, NOBODY), (GATED, NOBODY)],
)
def test_the_form_submitted_unchanged_gives_the_defaults(profiles: ProfileSet, user: UserContext) -> None:
    form = form_for(profiles, user)
    _, resolved = resolved_from(form, profiles, user)
    assert resolved == resolve_options(profiles, user, {})


def test_the_last_choices_submitted_unchanged_give_the_same_options() -> None:
    last = {
        "profile": "jupyterlab",
        "image": "cerit.io/hubs/mine:2.0",
        "cpu": "8",
        "memory": "32Gi",
        "gpu": "a100",
        "gpu_count": 2,
        "mounts": [],
        "home": "reset",
    }
    form = form_for(HUB, EVERYTHING, last)
    _, resolved = resolved_from(form, HUB, EVERYTHING)
    expected = resolve_options(HUB, EVERYTHING, {**last, "home": "keep"})
    assert resolved == expected


def test_choices_made_on_the_form_are_read() -> None:
    form = form_for(HUB, EVERYTHING)
    request, resolved = resolved_from(
        form,
        HUB,
        EVERYTHING,
        **{
            "jupyterlab--image": "minimal",
            "jupyterlab--cpu": "4",
            "jupyterlab--gpu": "mig-2g.20gb",
            "jupyterlab--gpu_count": "3",
            "jupyterlab--home": {"reset"},
            "jupyterlab--mounts": {"metacentrum"},
        },
    )
    assert request == {
        "profile": "jupyterlab",
        "image": "minimal",
        "gpu": "mig-2g.20gb",
        "gpu_count": "3",
        "cpu": "4",
        "memory": "8Gi",
        "home": "reset",
        "mounts": ["metacentrum"],
    }
    assert resolved.gpu is not None and resolved.gpu.count == 3
    assert resolved.home is not None and resolved.home.reset
    assert [m.id for m in resolved.mounts] == ["metacentrum"]


def test_only_the_chosen_profiles_fields_are_read() -> None:
    form = form_for(HUB, EVERYTHING)
    request, resolved = resolved_from(form, HUB, EVERYTHING, profile="rstudio", **{"jupyterlab--cpu": "32"})
    assert request["profile"] == "rstudio"
    assert request["cpu"] == "2"
    assert resolved.cpu_limit == 2000


def test_unchecked_mounts_mean_no_mounts_and_a_missing_marker_means_defaults() -> None:
    posted = {"profile": ["jupyterlab"], "jupyterlab--mounts-shown": ["1"]}
    assert request_from_form(posted, HUB, EVERYTHING)["mounts"] == []
    resolved = resolve_options(HUB, EVERYTHING, request_from_form(posted, HUB, EVERYTHING))
    assert resolved.mounts == ()
    without_marker = request_from_form({"profile": ["jupyterlab"]}, HUB, EVERYTHING)
    assert "mounts" not in without_marker
    assert [m.id for m in resolve_options(HUB, EVERYTHING, without_marker).mounts] == ["scratch", "projects"]


def test_gpu_count_is_dropped_without_a_gpu() -> None:
    posted = {
        "profile": ["jupyterlab"],
        "jupyterlab--gpu": ["none"],
        "jupyterlab--gpu_count": ["3"],
    }
    assert request_from_form(posted, HUB, GPU_USER) == {"profile": "jupyterlab", "gpu": "none"}
    assert "gpu_count" not in request_from_form({"jupyterlab--gpu_count": ["2"]}, HUB, GPU_USER)


def test_the_custom_image_field_is_used_only_when_chosen() -> None:
    chosen = {
        "profile": ["jupyterlab"],
        "jupyterlab--image": [CUSTOM_IMAGE_VALUE],
        "jupyterlab--image-custom": ["cerit.io/hubs/x:1"],
    }
    assert request_from_form(chosen, HUB, NOBODY)["image"] == "cerit.io/hubs/x:1"
    ignored = {**chosen, "jupyterlab--image": ["minimal"]}
    assert request_from_form(ignored, HUB, NOBODY)["image"] == "minimal"
    empty = {"profile": ["jupyterlab"], "jupyterlab--image": [CUSTOM_IMAGE_VALUE]}
    with pytest.raises(OptionsError, match="image"):
        resolve_options(HUB, NOBODY, request_from_form(empty, HUB, NOBODY))


def test_cpu_brought_by_the_gpu_type_is_not_read_from_the_form() -> None:
    posted = {"profile": ["pytorch"], "pytorch--gpu": ["a100"], "pytorch--cpu": ["4"]}
    request = request_from_form(posted, AI, NOBODY)
    assert "cpu" not in request
    assert resolve_options(AI, NOBODY, request).cpu_limit == 16000


def test_a_form_without_profile_reads_the_default_profiles_fields() -> None:
    request = request_from_form({"jupyterlab--cpu": ["4"], "rstudio--cpu": ["8"]}, HUB, NOBODY)
    assert request == {"cpu": "4"}
    assert resolve_options(HUB, NOBODY, request).profile == "jupyterlab"


@pytest.mark.parametrize(
    ("posted", "user", "key"),
    [
        ({"profile": ["jupyterlab"], "jupyterlab--gpu": ["a40"]}, NOBODY, "gpu"),
        ({"profile": ["secret"]}, NOBODY, "profile"),
        ({"profile": ["jupyterlab"], "jupyterlab--cpu": ["97"]}, NOBODY, "cpu"),
        ({"profile": ["jupyterlab"], "jupyterlab--cpu": ["2.5"]}, NOBODY, "cpu"),
        ({"profile": ["jupyterlab"], "jupyterlab--memory": ["3"]}, NOBODY, "memory"),
        ({"profile": ["jupyterlab"], "jupyterlab--memory": ["8.5"]}, NOBODY, "memory"),
        ({"profile": ["jupyterlab"], "jupyterlab--memory": ["1e3"]}, NOBODY, "memory"),
        ({"profile": ["jupyterlab"], "jupyterlab--cpu": ["2", "4"]}, NOBODY, "cpu"),
        ({"profile": ["jupyterlab", "rstudio"]}, NOBODY, "profile"),
        (
            {
                "profile": ["jupyterlab"],
                "jupyterlab--mounts-shown": ["1"],
                "jupyterlab--mounts": ["metacentrum"],
            },
            GPU_USER,
            "mounts",
        ),
        (
            {"profile": ["jupyterlab"], "jupyterlab--gpu": ["a40"], "jupyterlab--gpu_count": ["3"]},
            GPU_USER,
            "gpu_count",
        ),
        (
            {
                "profile": ["jupyterlab"],
                "jupyterlab--image": [CUSTOM_IMAGE_VALUE],
                "jupyterlab--image-custom": ["cerit.io/x:1 extra"],
            },
            NOBODY,
            "image",
        ),
        (
            {
                "profile": ["jupyterlab"],
                "jupyterlab--image": [CUSTOM_IMAGE_VALUE],
                "jupyterlab--image-custom": ["cerit.io/x:1.evil.com/y"],
            },
            NOBODY,
            "image",
        ),
        ({"profile": ["jupyterlab"], "jupyterlab--home": ["wipe"]}, NOBODY, "home"),
    ],
)
def test_forged_values_are_refused(posted: dict[str, list[str]], user: UserContext, key: str) -> None:
    profiles = GATED if posted.get("profile") == ["secret"] else HUB
    with pytest.raises(OptionsError) as refused:
        resolve_options(profiles, user, request_from_form(posted, profiles, user))
    assert refused.value.key == key


def test_query_arguments_are_flat_request_keys() -> None:
    query = {"profile": ["rstudio"], "cpu": ["4"], "mounts": ["projects", ""]}
    assert request_from_query(query) == {"profile": "rstudio", "cpu": "4", "mounts": ["projects"]}
    assert request_from_query({"cpu": ["1", "2"]}) == {"cpu": ["1", "2"]}


# --- a property: whatever a user clicks, the form and the resolver agree -----------------------


@st.composite
def clicks(draw: st.DrawFn) -> tuple[UserContext, RenderedForm, dict[str, object]]:
    groups = draw(st.sets(st.sampled_from(["gpu", "meta", "projects"])))
    user = UserContext(name="u", groups=frozenset(groups))
    form = form_for(HUB, user)
    changes: dict[str, object] = {"profile": draw(st.sampled_from(["jupyterlab", "rstudio"]))}
    for name in sorted(form.names()):
        controls = form.named(name)
        kind = controls[0].get("type", controls[0]["tag"])
        if kind == "select":
            changes[name] = draw(st.sampled_from(form.option_values(name)))
        elif kind == "radio" and name != "profile":
            changes[name] = draw(st.sampled_from([str(c["value"]) for c in controls]))
        elif kind == "checkbox":
            changes[name] = draw(st.sets(st.sampled_from([str(c["value"]) for c in controls])))
        elif kind == "text":
            changes[name] = draw(st.sampled_from(["", "cerit.io/a/b:1", "docker.io/x:1"]))
        elif kind == "number":
            # What a browser lets through: a number within the field's bounds on its grid.
            control = form.control(name)
            low, high, step = (Decimal(str(control[k])) for k in ("min", "max", "step"))
            changes[name] = str(low + step * draw(st.integers(0, int((high - low) / step))))
    return user, form, changes


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clicks())
def test_whatever_is_clicked_resolves_to_it_or_is_refused_with_a_message(
    case: tuple[UserContext, RenderedForm, dict[str, object]],
) -> None:
    user, form, changes = case
    posted = form.submit(changes)
    request = request_from_form(posted, HUB, user)
    try:
        resolved = resolve_options(HUB, user, request)
    except OptionsError as refused:
        assert refused.key in ("image", "gpu_count")  # a bad custom image, too many GPUs
        return
    slug = str(changes["profile"])
    assert resolved.profile == slug
    assert resolved.cpu_limit == parse_cpu(posted[f"{slug}--cpu"][0])
    memory = posted[f"{slug}--memory"][0]
    unit = "Gi" if form.control(f"{slug}--memory").get("type") == "number" else ""
    assert resolved.memory_limit == parse_memory(memory + unit)
    gpu = posted.get(f"{slug}--gpu", ["none"])[0]
    assert (resolved.gpu.id if resolved.gpu else "none") == gpu
    assert (resolved.home is not None and resolved.home.reset) == (f"{slug}--home" in posted)
    # What the user could not see, they were not given.
    assert resolved.gpu is None or "gpu" in user.groups
    assert all(m.id != "metacentrum" or "meta" in user.groups for m in resolved.mounts)


def test_reset_wording_follows_the_backend() -> None:
    kept = form_for(HUB, NOBODY).text
    # On Kubernetes the hub keeps an old home for 7 days (``homes.reset.keep_for``).
    deleted = form_for(HUB, NOBODY, reset_keeps_old_home=False).text
    assert "your current home is kept aside" in kept and "is deleted" not in kept
    assert "Reset my home (your current home is kept for a while)" in deleted
    assert "kept for 7 days, then deleted" in deleted
    assert "kept aside" not in deleted


# --- ranges, prices, GPU availability and mounts (issue 13) ------------------------------------


def test_a_range_is_a_number_field_with_its_unit() -> None:
    form = form_for(HUB, NOBODY)
    cpu, memory = form.control("jupyterlab--cpu"), form.control("jupyterlab--memory")
    assert (cpu["type"], cpu["min"], cpu["max"], cpu["step"], cpu["value"]) == ("number", "1", "96", "1", "2")
    assert (memory["type"], memory["min"], memory["max"], memory["step"]) == ("number", "4", "1024", "1")
    assert "Memory (limit, GiB)" in form.text
    assert "1 to 96 CPUs, in steps of 1. 0.35 CZK per CPU-hour." in form.text
    assert "4 to 1024 GiB, in steps of 1. 0.04 CZK per GiB-hour." in form.text
    # The choices of the other profile stay a select, each with its price.
    assert form.option_values("rstudio--cpu") == ["1", "2", "4", "8", "16"]
    assert "4 CPUs (1.40 CZK/h)" in form.text and "16 GiB (0.64 CZK/h)" in form.text


def test_a_posted_number_is_read_in_the_fields_unit() -> None:
    posted = {"profile": ["jupyterlab"], "jupyterlab--cpu": ["12"], "jupyterlab--memory": ["100"]}
    request = request_from_form(posted, HUB, NOBODY)
    assert request == {"profile": "jupyterlab", "cpu": "12", "memory": "100Gi"}
    resolved = resolve_options(HUB, NOBODY, request)
    assert (resolved.cpu_limit, resolved.memory_limit) == (12000, 100 * 2**30)
    # A value with its own unit is the resolver's to judge, as it came.
    assert request_from_form({"jupyterlab--memory": ["8Gi"]}, HUB, NOBODY) == {"memory": "8Gi"}


def hourly_of(profiles: ProfileSet, options: ResolvedOptions) -> str:
    amount = hourly_cost(
        profiles.instance.prices,
        cpu_millicores=options.cpu_limit,
        memory_bytes=options.memory_limit,
        gpu=options.gpu.id if options.gpu else None,
        gpu_count=options.gpu.count if options.gpu else 0,
    )
    return money_text(amount, "CZK")


def cost_line(form: RenderedForm, slug: str) -> str:
    view_text = form.text
    marker = "Hourly cost of this choice: "
    # One line per profile, in page order.
    lines = [part.split(" CZK")[0] + " CZK" for part in view_text.split(marker)[1:]]
    slugs = [str(c["value"]) for c in form.named("profile")]
    return lines[slugs.index(slug)]


def test_each_gpu_type_and_the_current_choice_show_their_price() -> None:
    form = form_for(
        HUB, GPU_USER, {"profile": "jupyterlab", "cpu": 4, "memory": "16Gi", "gpu": "a40", "gpu_count": 2}
    )
    assert "NVIDIA A40 (up to 2, 38.00 CZK per GPU-hour)" in form.text
    assert "NVIDIA H100 (120.00 CZK per GPU-hour)" in form.text
    # 4 x 0.35 + 16 x 0.04 + 2 x 38 = 78.04: the usage report's rule (pricing.hourly_cost).
    assert cost_line(form, "jupyterlab") == "78.04 CZK"


def test_without_prices_nothing_is_priced() -> None:
    form = form_for(GATED, NOBODY)
    assert "CZK" not in form.text and "Hourly cost" not in form.text
    assert "data-einfra-price=" not in form_template().render(form=build_form(GATED, NOBODY))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clicks())
def test_the_cost_line_is_the_cost_of_what_the_form_submits(
    case: tuple[UserContext, RenderedForm, dict[str, object]],
) -> None:
    """For any last choice, the server's line equals the report's rule applied to the options
    the unchanged form resolves to."""
    user, form, changes = case
    try:
        last = resolve_options(HUB, user, request_from_form(form.submit(changes), HUB, user))
    except OptionsError:
        return
    again = render(build_form(HUB, user, last=last))
    resolved = resolve_options(HUB, user, request_from_form(again.submit(), HUB, user))
    assert dataclasses.replace(resolved, home=last.home) == last  # a reset is never pre-checked
    assert cost_line(again, last.profile) == hourly_of(HUB, last)


def test_a_gpu_type_the_cluster_lacks_is_shown_disabled_with_the_reason() -> None:
    capacity = {
        "a40": GpuCapacity("a40", 0, 2),  # busy: stays selectable
        "h100": GpuCapacity("h100", 0, 0),  # none at all
        "mig-1g.10gb": GpuCapacity("mig-1g.10gb", 3, 3),
    }
    form = form_for(HUB, GPU_USER, capacity=capacity)
    radios = {str(c["value"]): c for c in form.named("jupyterlab--gpu")}
    assert "disabled" in radios["h100"] and "disabled" not in radios["a40"]
    assert "NVIDIA H100 (none on this cluster, 120.00 CZK per GPU-hour)" in form.text
    assert "NVIDIA A40 (up to 2, 0 of 2 free, 38.00 CZK per GPU-hour)" in form.text
    # "Number of GPUs": the type's max_count bounded by the cluster's total.
    assert "NVIDIA A100 slice (MIG 1g.10gb) (up to 3, 3 of 3 free" in form.text
    assert radios["mig-1g.10gb"]["data-einfra-count-bound"] == "3"
    assert radios["a40"]["data-einfra-count-bound"] == "2"
    # Types without figures (a10 ...) are not bounded, so 4 (mig-2g.20gb's max_count) stays.
    assert form.option_values("jupyterlab--gpu_count") == ["1", "2", "3", "4"]
    # The resolver does not newly refuse a busy or an absent type: the backend fails fast.
    assert resolve_options(HUB, GPU_USER, {"gpu": "h100"}).gpu is not None


def test_a_disabled_type_is_never_pre_selected() -> None:
    capacity = {"a40": GpuCapacity("a40", 0, 0)}
    form = form_for(HUB, GPU_USER, {"gpu": "a40"}, capacity=capacity)
    assert form.checked("jupyterlab--gpu") == ["none"]
    _, resolved = resolved_from(form, HUB, GPU_USER)
    assert resolved.gpu is None


def test_counts_are_bounded_by_the_cluster_and_a_too_small_cluster_closes_the_type() -> None:
    profiles = instance(
        {
            "instance.yaml": "name: c\ndisplay_name: C\n"
            "gpu_types: {a40: {display_name: A40, resource: nvidia.com/gpu}, "
            "h100: {display_name: H100, resource: nvidia.com/gpu}}\n",
            "p.yaml": "slug: p\ndisplay_name: P\nimage: quay.io/a/b:1\ncpu: 1\nmemory: 1Gi\n"
            "gpu: [none, {id: a40, max_count: 8}, {id: h100, count: {min: 2, max: 4, step: 2}}]\n",
        }
    )
    form = form_for(
        profiles, NOBODY, capacity={"a40": GpuCapacity("a40", 1, 3), "h100": GpuCapacity("h100", 1, 1)}
    )
    assert form.option_values("p--gpu_count") == ["1", "2", "3"]
    radios = {str(c["value"]): c for c in form.named("p--gpu")}
    assert "disabled" in radios["h100"]
    assert "H100 (only 1 on this cluster, at least 2 needed, 1 of 1 free)" in form.text
    unknown = form_for(profiles, NOBODY)
    assert unknown.option_values("p--gpu_count") == ["1", "2", "3", "4", "5", "6", "7", "8"]
    assert not [c for c in unknown.named("p--gpu") if "disabled" in c]


def test_without_figures_nothing_is_disabled() -> None:
    form = form_for(HUB, GPU_USER, capacity={})
    assert not [c for c in form.named("jupyterlab--gpu") if "disabled" in c]


def test_mounts_the_backend_cannot_provide_are_marked_and_not_offered() -> None:
    form = form_for(HUB, EVERYTHING, mounts_apply=False, servers_run_as="local processes")
    assert "jupyterlab--mounts" not in form.names()
    assert "jupyterlab--mounts-shown" not in form.names()
    assert "Extra storage is not provided on this hub (its servers run as local processes)." in form.text
    assert "MetaCentrum storage (sshfs) (/home/jovyan/metacentrum) (not provided)" in form.text
    # The posted form asks for no mounts: the resolver's defaults stand, the backend ignores them.
    request = request_from_form(form.submit(), HUB, EVERYTHING)
    assert "mounts" not in request


def test_gpu_quota_lines_only_for_users_who_may_choose_a_gpu() -> None:
    quotas = HUB.instance.quotas
    assert "You use 0 of your 4 GPUs." in describe_quotas(quotas, NOBODY, ())
    assert not [line for line in describe_quotas(quotas, NOBODY, (), gpus_offered=False) if "GPU" in line]
    assert "You run 0 of your 5 servers." in describe_quotas(quotas, NOBODY, (), gpus_offered=False)


def test_the_count_pre_selected_is_one_the_cluster_can_hold() -> None:
    profiles = instance(
        {
            "instance.yaml": "name: c\ndisplay_name: C\n"
            "gpu_types: {a40: {display_name: A40, resource: nvidia.com/gpu}}\n"
            "prices: {currency: CZK, gpu_hour: {a40: 10}}\n",
            "p.yaml": "slug: p\ndisplay_name: P\nimage: quay.io/a/b:1\ncpu: 1\nmemory: 1Gi\n"
            "gpu: [{id: a40, count: {min: 2, max: 8, step: 2, default: 4}}]\n",
        }
    )
    form = form_for(profiles, NOBODY, capacity={"a40": GpuCapacity("a40", 2, 2)})
    assert form.option_values("p--gpu_count") == ["2"]
    _, resolved = resolved_from(form, profiles, NOBODY)
    assert resolved.gpu is not None and resolved.gpu.count == 2
    assert cost_line(form, "p") == "20.00 CZK"  # the count the form posts, not the default 4
