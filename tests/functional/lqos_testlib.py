"""Helpers shared by the functional tests: bpffs mounts, veth pairs, module runs."""
from __future__ import annotations

import json
import shutil
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The tracing-refused pass (tests/run-all.sh runs the attach, pinned-map and deploy tests a second time
# with LQOS_TEST_TRACING_REFUSED=1): every module and ansible-playbook process starts under
# tracing_refusal.py, so every load of a tracing program (iterators, fentry, BPF-LSM) fails with EPERM
# before verification, on any kernel, as on the machines whose policy refuses them; XDP, TC and maps reach
# the kernel unchanged with every capability (a capability drop would make the verifier reject the data
# path too: see tracing_refusal.py).
TRACING_REFUSED = os.environ.get("LQOS_TEST_TRACING_REFUSED", "") not in ("", "0")
TRACING_REFUSAL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tracing_refusal.py")
DROPPED_CAPS = ("CAP_SYS_ADMIN", "CAP_PERFMON")


def refusal_prefix() -> list:
    """The argument list that runs a command under the staged tracing refusal (tracing_refusal.py)."""
    return [sys.executable, TRACING_REFUSAL, "--"]


def drop_caps_prefix() -> list:
    """setpriv without CAP_SYS_ADMIN and CAP_PERFMON: out of the bounding and inheritable sets, so the
    program it execs (even as root) never holds them; CAP_BPF, CAP_NET_ADMIN and the rest stay."""
    caps = ",".join("-" + c[4:].lower() for c in DROPPED_CAPS)
    return ["setpriv", "--inh-caps=" + caps, "--bounding-set=" + caps, "--"]


def module_prefix(prefix: tuple = ()) -> list:
    """The argument list a module (or ansible-playbook) of this pass starts under: ``prefix`` as given,
    behind refusal_prefix() in the tracing-refused pass."""
    return (refusal_prefix() if TRACING_REFUSED else []) + list(prefix)


def sh(*argv, check=True, **kw):
    """Run an argument list; raise with its output when it fails."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, **kw)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (%d): %s%s" % (argv, proc.returncode, proc.stdout, proc.stderr))
    return proc


def mount_bpffs(path: str) -> None:
    sh("mount", "-t", "bpf", "bpf", path)


def umount(path: str) -> None:
    sh("umount", "-l", path, check=False)


class NetnsPair:
    """ns ``<name>a`` holds ``<name>a0`` (10.211.N.1), ns ``<name>b`` holds ``<name>b0`` (10.211.N.2)."""

    _counter = 0

    def __init__(self, name: str):
        NetnsPair._counter += 1
        self.name = name
        self.ns_a, self.ns_b = name + "a", name + "b"
        self.if_a, self.if_b = name + "a0", name + "b0"
        net = 10 + NetnsPair._counter % 200
        self.ip_a, self.ip_b = "10.211.%d.1" % net, "10.211.%d.2" % net

    def create(self) -> None:
        sh("ip", "netns", "add", self.ns_a)
        sh("ip", "netns", "add", self.ns_b)
        sh("ip", "-n", self.ns_a, "link", "add", self.if_a, "type", "veth", "peer", "name", self.if_b,
           "netns", self.ns_b)
        for ns, ifname, ip in ((self.ns_a, self.if_a, self.ip_a), (self.ns_b, self.if_b, self.ip_b)):
            sh("ip", "-n", ns, "addr", "add", ip + "/24", "dev", ifname)
            sh("ip", "-n", ns, "link", "set", ifname, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def destroy(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            sh("ip", "netns", "delete", ns, check=False)

    def ping(self, count: int = 1, interval: str = "0.2", timeout: int = 2):
        return sh("ip", "netns", "exec", self.ns_a, "ping", "-c", str(count), "-i", interval,
                  "-W", str(timeout), self.ip_b, check=False)


def copy_bpf(dest) -> str:
    """A private copy of bpf/ (shaper_sys and its sibling shaper_utils); returns the crate root."""

    shutil.copytree(os.path.join(REPO, "bpf"), os.path.join(str(dest), "bpf"))
    return os.path.join(str(dest), "bpf", "shaper_sys")


def edit(path, old: str, new: str) -> None:
    """Replace the first ``old`` in a file, failing loudly if the fixture source drifted."""
    with open(path) as fh:
        text = fh.read()
    if old not in text:
        raise AssertionError("test fixture drifted: %r not in %s" % (old, path))
    with open(path, "w") as fh:
        fh.write(text.replace(old, new, 1))


# ---------------------------------------------------------------------------
# Real LibreQoS trees: the shared tarballs, unpacked at test time (GPL-2.0 test data, never copied into the repo)
# ---------------------------------------------------------------------------

LIBREQOS_REFS = ("v1.4", "v2.0", "v2.1", "v2.2", "develop")
_LIBREQOS = {"root": None, "trees": {}, "builds": {}}


def libreqos_tarball_dirs() -> list:
    """Where the tarballs ``libreqos-<ref>.tar.gz`` may be, first match wins: ``LQOS_LIBREQOS_TARBALLS``; then
    ``../shared/libreqos`` beside the checkout (CI clones the project next to a copy of shared/); for a git
    worktree also beside the main checkout it belongs to."""
    dirs = [os.environ["LQOS_LIBREQOS_TARBALLS"]] if os.environ.get("LQOS_LIBREQOS_TARBALLS") else []
    dirs.append(os.path.join(os.path.dirname(REPO), "shared", "libreqos"))
    try:
        proc = subprocess.run(["git", "-C", REPO, "rev-parse", "--path-format=absolute", "--git-common-dir"],
                              capture_output=True, text=True, check=False)
    except OSError:   # no git: a plain copy of the project
        proc = subprocess.CompletedProcess([], 1, "", "")
    common = proc.stdout.strip()
    if proc.returncode == 0 and os.path.basename(common) == ".git":
        dirs.append(os.path.join(os.path.dirname(os.path.dirname(common)), "shared", "libreqos"))
    return dirs


def libreqos_tarball(ref: str) -> str:
    import pytest
    name = "libreqos-%s.tar.gz" % ref
    dirs = libreqos_tarball_dirs()
    for d in dirs:
        if os.path.isfile(os.path.join(d, name)):
            return os.path.join(d, name)
    pytest.fail("the LibreQoS test tree %s is missing: looked in %s. CI always has them: clone the project next to "
                "a copy of shared/ (../shared/libreqos/ from the project root), set LQOS_LIBREQOS_TARBALLS to the "
                "folder holding libreqos-<ref>.tar.gz, or LQOS_LIBREQOS_SRC to a LibreQoS checkout"
                % (name, ", ".join(dirs)))


def set_libreqos_root(path: str) -> None:
    """The session's folder for unpacked trees (conftest's session fixture sets it from tmp_path_factory)."""
    _LIBREQOS["root"] = path


def _libreqos_root() -> str:
    if _LIBREQOS["root"] is None:
        _LIBREQOS["root"] = tempfile.mkdtemp(prefix="lqos-libreqos-")
    return _LIBREQOS["root"]


def libreqos_crate(ref: str = "develop") -> str:
    """The lqos_sys crate of LibreQoS ``ref``, unpacked once per session from the shared tarball (read-only use:
    a test that edits it works on ``libreqos_copy``). ``LQOS_LIBREQOS_SRC`` (a checkout's root or its lqos_sys)
    replaces the develop tree."""
    import pytest
    src = os.environ.get("LQOS_LIBREQOS_SRC", "")
    if src and ref == "develop":
        for cand in (os.path.join(src, "src", "rust", "lqos_sys"), src):
            if os.path.isfile(os.path.join(cand, "src", "bpf", "lqos_kern.c")):
                return cand
        pytest.fail("LQOS_LIBREQOS_SRC=%s holds neither src/rust/lqos_sys nor src/bpf/lqos_kern.c" % src)
    if ref not in _LIBREQOS["trees"]:
        import tarfile
        dest = os.path.join(_libreqos_root(), ref)
        os.makedirs(dest)
        with tarfile.open(libreqos_tarball(ref)) as tar:
            members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]  # no links or devices from data
            tar.extractall(dest, members=members)
        crate = os.path.join(dest, "src", "rust", "lqos_sys")
        if not os.path.isfile(os.path.join(crate, "src", "bpf", "lqos_kern.c")):
            pytest.fail("%s holds no src/rust/lqos_sys/src/bpf/lqos_kern.c" % libreqos_tarball(ref))
        _LIBREQOS["trees"][ref] = crate
    return _LIBREQOS["trees"][ref]


def libreqos_copy(dest, ref: str = "develop") -> str:
    """A private, editable copy of LibreQoS ``ref``'s src/rust under ``dest``; returns its lqos_sys crate."""
    rust = os.path.dirname(libreqos_crate(ref))
    shutil.copytree(rust, os.path.join(str(dest), "rust"), symlinks=True)
    return os.path.join(str(dest), "rust", "lqos_sys")


def libreqos_build(ref: str = "develop") -> dict:
    """``lqos.bpf.pipeline`` with spec libreqos on ``ref``'s tree, run once per session and shared by every test
    that only reads the build: {"crate", "dest", "build_dir", "object", "result"}."""
    if ref not in _LIBREQOS["builds"]:
        crate = libreqos_crate(ref)
        dest = os.path.join(_libreqos_root(), "build-" + ref)
        result = run_module("pipeline", dict(spec="libreqos", src=crate, dest=dest))
        if result["_rc"] != 0:
            raise AssertionError("building LibreQoS %s failed: %s" % (ref, result.get("msg")))
        _LIBREQOS["builds"][ref] = {"crate": crate, "dest": dest, "build_dir": result["build_dir"],
                                    "object": result["outputs"]["object"]["path"], "result": result}
    return _LIBREQOS["builds"][ref]


META_CALL = "bpf_xdp_adjust_meta(ctx, -round_up(ETH_ALEN, sizeof(struct metadata_pass_t)))"


def libreqos_fitted(ref: str = "develop") -> dict:
    """The build of ``ref`` this kernel loads: the real one, or - when the kernel refuses the
    ``bpf_xdp_adjust_meta`` helper (kernel policy on some machines) - a build of a private copy whose one call to
    it is answered "not supported" (-1), the path LibreQoS itself takes on a driver without XDP metadata. The
    result has ``fitted``: None, or what was changed and why. Refusals for any other reason stay (needs_xdp)."""
    real = libreqos_build(ref)
    why = xdp_refusal(real)
    if not why or "bpf_xdp_adjust_meta" not in why:
        return dict(real, fitted=None)
    key = ref + "+nometa"
    if key not in _LIBREQOS["builds"]:
        crate = libreqos_copy(os.path.join(_libreqos_root(), key), ref)
        edit(os.path.join(crate, "src", "bpf", "lqos_kern.c"), META_CALL, "-1 /* lqos.bpf tests: no XDP metadata */")
        dest = os.path.join(_libreqos_root(), "build-" + key)
        result = run_module("pipeline", dict(spec="libreqos", src=crate, dest=dest))
        if result["_rc"] != 0:
            raise AssertionError("building LibreQoS %s without XDP metadata failed: %s" % (ref, result.get("msg")))
        _LIBREQOS["builds"][key] = {"crate": crate, "dest": dest, "build_dir": result["build_dir"],
                                    "object": result["outputs"]["object"]["path"], "result": result,
                                    "fitted": "bpf_xdp_adjust_meta answered -1 (this kernel refuses it: %s)" % why}
    return _LIBREQOS["builds"][key]


def xdp_refusal(build: dict) -> str | None:
    """None when this kernel loads a LibreQoS build's xdp_prog (a trial load: nothing pinned or attached), else
    the probe's reason. Kernels differ (this machine's refuses the bpf_xdp_adjust_meta helper v2.0+ calls)."""
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as _bpf_object
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel.libbpf import possible_cpus
    if "xdp_refusal" not in build:
        row = _bpf_object.probe_programs(build["object"], names=["xdp_prog"], resize={"cpu_map": possible_cpus()})[0]
        build["xdp_refusal"] = None if row["loadable"] else "%s %s" % (
            row["reason"], " ".join((row["log_tail"] or "").split())[-160:])
    return build["xdp_refusal"]


def needs_xdp(build: dict, ref: str) -> None:
    """Skip (with the probe's reason, never for want of a tree) when this kernel refuses the ref's xdp_prog."""
    import pytest
    why = xdp_refusal(build)
    if why:
        pytest.skip("this kernel refuses LibreQoS %s's xdp_prog (trial load): %s" % (ref, why))


def module_path(name: str) -> str:
    return os.path.join(REPO, "plugins", "modules", name + ".py")


def module_args_file(name: str, args: dict, check_mode: bool = False, diff: bool = False,
                     resolve_spec: bool = True) -> str:
    """Write the JSON args file a module reads. ``spec`` (a built-in name or a path)
    is resolved here, on "the controller", exactly as the action plugin does."""
    from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import resolve_spec_option

    args = dict(args)
    if resolve_spec and "spec" in args:
        args["spec"] = resolve_spec_option(args["spec"], REPO)
    payload = {"ANSIBLE_MODULE_ARGS": dict(args, _ansible_check_mode=check_mode, _ansible_diff=diff)}
    with tempfile.NamedTemporaryFile("w", prefix="lqos-%s-" % name, suffix=".json", delete=False) as fh:
        json.dump(payload, fh)
    return fh.name


def run_module(name: str, args: dict, check_mode: bool = False, diff: bool = False,
               env: dict | None = None, resolve_spec: bool = True, prefix: tuple = ()) -> dict:
    """Run a module file the way Ansible's local connection would; return its JSON result
    plus ``_rc`` and ``_stderr``. ``prefix``: an argument list to run it under (e.g.
    ``ip netns exec NS setpriv ... --``), behind the staged refusal in the tracing-refused pass."""
    prefix = module_prefix(tuple(prefix))
    argfile = module_args_file(name, args, check_mode, diff, resolve_spec)
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    if env:
        full_env.update(env)
    try:
        proc = subprocess.run(list(prefix) + [sys.executable, "-m", "ansible_collections.lqos.bpf.plugins.modules." + name, argfile],
                              capture_output=True, text=True, env=full_env, cwd="/", check=False)
    finally:
        os.unlink(argfile)
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("module %s printed no JSON (rc=%d):\n%s\n%s" % (name, proc.returncode, proc.stdout, proc.stderr))
    result["_rc"] = proc.returncode
    result["_stderr"] = proc.stderr
    # ansible-core 2.19 carries module.warn() texts as structured events.
    result["warnings"] = [w["event"]["msg"] if isinstance(w, dict) and "event" in w else w
                          for w in result.get("warnings", [])]
    return result


def compile_bpf(tmp, name, source):
    """Compile one BPF C source with clang -g -O2 -target bpf; returns the object's path."""
    src = os.path.join(str(tmp), name + ".c")
    with open(src, "w") as fh:
        fh.write(source)
    obj = os.path.join(str(tmp), name + ".o")
    arch_inc = "/usr/include/%s-linux-gnu" % os.uname().machine
    sh("clang", "-O2", "-g", "-target", "bpf", "-I", arch_inc, "-c", src, "-o", obj)
    return obj


def build_reference(work, spec, name):
    """Build the reference crate (a copy of bpf/) with ``spec``; returns the object's path."""
    shutil.copytree(os.path.join(REPO, "bpf"), str(work / name))
    result = run_module("pipeline", dict(spec=spec, src=str(work / name / "shaper_sys"), dest=str(work / (name + "-out"))))
    assert result["_rc"] == 0, result
    return result["outputs"]["object"]["path"]


def run_pipeline(crate: str, dest: str, **kw) -> dict:
    """lqos.bpf.pipeline with spec reference on a crate copy; ``env``, ``check_mode`` and ``diff`` go to
    run_module, every other keyword is a module option."""
    env = kw.pop("env", None)
    check = kw.pop("check_mode", False)
    diff = kw.pop("diff", False)
    args = dict(spec="reference", src=crate, dest=dest)
    args.update(kw)
    return run_module("pipeline", args, check_mode=check, diff=diff, env=env)


# ---------------------------------------------------------------------------
# What the kernel under test allows (probed, never assumed)
# ---------------------------------------------------------------------------

# The smallest tracing program: a map-element iterator that returns 0. Its load needs only what every
# iterator needs (BTF of the kernel, a kernel that allows tracing programs to this process).
PROBE_ITER_C = r"""
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct bpf_iter_meta { void *seq; __u64 session_id; __u64 seq_num; } __attribute__((preserve_access_index));
struct bpf_iter__bpf_map_elem {
    struct bpf_iter_meta *meta; void *map; void *key; void *value;
} __attribute__((preserve_access_index));

SEC("iter/bpf_map_elem")
int probe_iter(struct bpf_iter__bpf_map_elem *ctx) { return 0; }

char _license[] SEC("license") = "GPL";
"""

_PROBE_SCRIPT = r"""
import json, sys
from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
from ansible_collections.lqos.bpf.plugins.module_utils._kernel.programs import kernel_facts
names, resize = json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(json.dumps({"rows": O.probe_programs(sys.argv[1], names=names, resize=resize), "kernel": kernel_facts()}))
"""

_probe_cache = {}


def cpu_resize(obj: str) -> dict:
    """{cpumap name: possible CPUs}: the resize lqos.bpf.attach gives every CPU map of an object."""
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel.libbpf import possible_cpus

    return {m["name"]: possible_cpus() for m in O.object_info(obj)["maps"] if m["type_name"] == "cpumap"}


def probe_as_module(obj: str, names=None) -> dict:
    """The product's own per-program probe (``_kernel.objects.probe_programs``), run in a process started the
    way this pass starts modules (module_prefix: without CAP_SYS_ADMIN and CAP_PERFMON in the
    tracing-refused pass), with attach's CPU map sizes. Returns {"rows": {name: row}, "kernel": kernel_facts() of that process}."""
    key = (obj, tuple(sorted(names)) if names is not None else None)
    if key not in _probe_cache:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        proc = subprocess.run(module_prefix() + [sys.executable, "-c", _PROBE_SCRIPT, obj,
                                                 json.dumps(list(key[1]) if names is not None else None),
                                                 json.dumps(cpu_resize(obj))],
                              capture_output=True, text=True, env=env, cwd="/", check=False)
        if proc.returncode != 0:
            raise AssertionError("probing %s failed (%d): %s%s" % (obj, proc.returncode, proc.stdout, proc.stderr))
        out = json.loads(proc.stdout)
        _probe_cache[key] = {"rows": {r["name"]: r for r in out["rows"]}, "kernel": out["kernel"]}
    return _probe_cache[key]


def attach_optional(obj: str, spec=None, kprobes=()) -> list:
    """The optional programs lqos.bpf.attach trial-loads for ``spec`` (program_roles; a kprobe only when
    asked for in ``kprobes``), in object order."""
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel.programs import kprobe_target, program_roles
    from ansible_collections.lqos.bpf.plugins.plugin_utils._spec_loader import resolve_spec_option

    if isinstance(spec, str):
        spec = resolve_spec_option(spec, REPO)
    progs = O.object_info(obj)["programs"]
    roles = program_roles(spec, progs)
    return [p["name"] for p in progs if roles.get(p["name"]) == "optional"
            and (not kprobe_target(p["section"]) or p["name"] in kprobes)]


def left_out_warnings(obj: str, ifname: str, spec=None, kprobes=()) -> list:
    """The warnings lqos.bpf.attach must give on ``ifname`` for the optional programs the kernel refuses to a
    module of this pass: one per refused program, from the product's probe run as a module would run (so
    ``[]`` where every optional program loads)."""
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel.programs import feature_of

    names = attach_optional(obj, spec, kprobes)
    rows = probe_as_module(obj, names)["rows"]
    return ["optional program %s (SEC(\"%s\")) was left out on %s: %s. Lost: %s. Fix: %s"
            % (n, rows[n]["section"], ifname, rows[n]["reason"], feature_of(rows[n]["section"]), rows[n]["fix"])
            for n in names if not rows[n]["loadable"]]


def load_as_product(obj: str, spec=None, **kw):
    """Load a whole object the way lqos.bpf.attach does: the optional programs the kernel refuses to this
    process (``_kernel.objects.probe_programs``) are left out, every other one loads (a refused required program
    raises LoadError); a kprobe is never loaded (attach loads one only when asked). ``kw`` goes to load_object
    (pin_root, resize, rodata, data). Returns the LoadedObject with two more attributes: ``left_out`` (the
    refused optional programs) and ``loaded_programs`` (the names that loaded)."""
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel import objects as O

    names = attach_optional(obj, spec)
    refused = [r["name"] for r in O.probe_programs(obj, names=names, resize=kw.get("resize"))
               if not r["loadable"]] if names else []
    from ansible_collections.lqos.bpf.plugins.module_utils._kernel.programs import kprobe_target
    kprobes = [p["name"] for p in O.object_info(obj)["programs"] if kprobe_target(p["section"])
               and p["name"] not in names]
    lo = O.load_object(obj, disabled=sorted(set(refused) | set(kprobes)), **kw)
    lo.left_out = refused
    lo.loaded_programs = [n for n in lo.programs if n not in refused and n not in kprobes]
    return lo
