"""The options form: what each user sees, and the posted form turned back into a request.

The form is rendered to HTML and read back with a small parser that submits it the way a
browser would (checked radios and checkboxes, selected options, hidden and text fields), so the
tests cover the template and :mod:`einfra_spawner.form` together, the way JupyterHub uses them.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
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
from einfra_spawner.quantities import parse_cpu
from einfra_spawner.spawner import _form_template

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
    return RenderedForm(_form_template().render(form=view))


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
    assert not {n for n in form_for(HUB, NOBODY).names() if "mounts" in n}
    form = form_for(HUB, UserContext(name="p", groups=frozenset({"projects"})))
    assert [c["value"] for c in form.named("jupyterlab--mounts")] == ["projects"]
    assert form.named("jupyterlab--mounts-shown")
    assert "MetaCentrum" not in form.text
    everything = form_for(HUB, EVERYTHING)
    assert [c["value"] for c in everything.named("jupyterlab--mounts")] == [
        "metacentrum",
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
    assert "NVIDIA A100 80GB (with 16 CPUs and 128 GiB, up to 2, 3 of 8 free)" in form.text


def test_defaults_are_selected() -> None:
    form = form_for(HUB, EVERYTHING)
    assert form.checked("profile") == ["jupyterlab"]
    assert form.selected("jupyterlab--image") == "scipy"
    assert form.selected("jupyterlab--cpu") == "2"
    assert form.selected("jupyterlab--memory") == "8Gi"
    assert form.checked("jupyterlab--gpu") == ["none"]
    assert form.checked("jupyterlab--mounts") == ["projects"]  # the default mount
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
    assert form.selected("jupyterlab--cpu") == "8"
    assert form.selected("jupyterlab--memory") == "32Gi"
    assert form.checked("jupyterlab--gpu") == ["a40"]
    assert form.selected("jupyterlab--gpu_count") == "2"
    assert form.checked("jupyterlab--mounts") == ["metacentrum"]
    # Other profiles keep their own defaults.
    assert form.selected("rstudio--cpu") == "2"


def test_the_last_profile_is_selected() -> None:
    form = form_for(HUB, NOBODY, {"profile": "rstudio", "cpu": "4"})
    assert form.checked("profile") == ["rstudio"]
    assert form.selected("rstudio--cpu") == "4"
    assert form.selected("jupyterlab--cpu") == "2"


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
    assert "NVIDIA A40 (up to 2, 2 of 2 free)" in form.text
    assert "NVIDIA A100 slice (MIG 1g.10gb) (up to 4, 0 of 7 free)" in form.text
    assert "NVIDIA H100 Number of GPUs" in form.text  # no figure where the backend could not tell
    assert "free" not in form_for(HUB, GPU_USER).text
    none_here = form_for(HUB, GPU_USER, capacity={"h100": GpuCapacity("h100", 0, 0)})
    assert "NVIDIA H100 (none available)" in none_here.text


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
    html = _form_template().render(form=build_form(HUB, EVERYTHING))
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
    html = _form_template().render(form=dataclasses.replace(view, profiles=(forged,)))
    assert "<script>" not in html
    assert "&#34;&gt;&lt;script&gt;" in html
    # Operator-written texts are escaped too.
    assert "Open &amp; free" in _form_template().render(form=build_form(GATED, NOBODY))


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
    assert [m.id for m in resolve_options(HUB, EVERYTHING, without_marker).mounts] == ["projects"]


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
        ({"profile": ["jupyterlab"], "jupyterlab--cpu": ["64"]}, NOBODY, "cpu"),
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
    gpu = posted.get(f"{slug}--gpu", ["none"])[0]
    assert (resolved.gpu.id if resolved.gpu else "none") == gpu
    assert (resolved.home is not None and resolved.home.reset) == (f"{slug}--home" in posted)
    # What the user could not see, they were not given.
    assert resolved.gpu is None or "gpu" in user.groups
    assert all(m.id != "metacentrum" or "meta" in user.groups for m in resolved.mounts)


def test_reset_wording_follows_the_backend() -> None:
    kept = form_for(HUB, NOBODY).text
    deleted = form_for(HUB, NOBODY, reset_keeps_old_home=False).text
    assert "your current home is kept aside" in kept and "is deleted" not in kept
    assert "Reset my home (your current home is deleted)" in deleted
    assert "kept aside" not in deleted
