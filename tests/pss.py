"""The Pod Security Standards' checks, written as the standard defines them, for tests.

Source: https://kubernetes.io/docs/concepts/security/pod-security-standards/ (the "Baseline" and "Restricted" tables,
Kubernetes 1.29-1.33). :func:`restricted_violations` returns one line per control a pod spec breaks, naming the
control and the field; ``[]`` means the pod passes the restricted profile (which includes the baseline profile).
Every container kind counts: ``containers``, ``initContainers`` and ``ephemeralContainers``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

# Baseline "Capabilities": what a container may add
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
# Baseline "Sysctls": the safe set
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
# Baseline "SELinux": allowed types
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
# Restricted "Volume Types": the only volume sources allowed
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                      "secret"}
CONTAINER_KINDS = ("containers", "initContainers", "ephemeralContainers")


def _containers(spec: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for kind in CONTAINER_KINDS:
        for i, c in enumerate(spec.get(kind) or []):
            yield f"spec.{kind}[{i}]", c


def baseline_violations(pod: Mapping[str, Any]) -> list[str]:
    """The controls of the baseline profile ``pod`` (a Pod, or a pod template with metadata and spec) breaks."""
    spec, meta = pod.get("spec") or {}, pod.get("metadata") or {}
    out: list[str] = []
    psc = spec.get("securityContext") or {}
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        out.append("HostProcess: spec.securityContext.windowsOptions.hostProcess")
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(field):
            out.append(f"Host Namespaces: spec.{field}")
    for i, volume in enumerate(spec.get("volumes") or []):
        if "hostPath" in volume:
            out.append(f"HostPath Volumes: spec.volumes[{i}].hostPath")
    for key, value in (meta.get("annotations") or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and value != "runtime/default" and \
                not value.startswith("localhost/"):
            out.append(f"AppArmor: metadata.annotations[{key}]")
    out += _selinux("spec.securityContext", psc)
    out += _seccomp_baseline("spec.securityContext", psc)
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"Sysctls: spec.securityContext.sysctls {sysctl.get('name')}")
    for where, c in _containers(spec):
        out += _baseline_container(where, c)
    return out


def _baseline_container(where: str, c: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    sc = c.get("securityContext") or {}
    if (sc.get("windowsOptions") or {}).get("hostProcess"):
        out.append(f"HostProcess: {where}.securityContext.windowsOptions.hostProcess")
    if sc.get("privileged"):
        out.append(f"Privileged Containers: {where}.securityContext.privileged")
    added = set((sc.get("capabilities") or {}).get("add") or [])
    if added - BASELINE_CAPABILITIES:
        out.append(f"Capabilities: {where}.securityContext.capabilities.add {sorted(added - BASELINE_CAPABILITIES)}")
    for j, port in enumerate(c.get("ports") or []):
        if port.get("hostPort"):
            out.append(f"Host Ports: {where}.ports[{j}].hostPort")
    if sc.get("procMount") not in (None, "Default"):
        out.append(f"/proc Mount Type: {where}.securityContext.procMount")
    apparmor = (sc.get("appArmorProfile") or {}).get("type")
    if apparmor not in (None, "RuntimeDefault", "Localhost"):
        out.append(f"AppArmor: {where}.securityContext.appArmorProfile.type")
    return out + _selinux(f"{where}.securityContext", sc) + _seccomp_baseline(f"{where}.securityContext", sc)


def _selinux(where: str, sc: Mapping[str, Any]) -> list[str]:
    opts = sc.get("seLinuxOptions") or {}
    out = [f"SELinux: {where}.seLinuxOptions.{f}" for f in ("user", "role") if opts.get(f)]
    if opts.get("type", "") not in SELINUX_TYPES:
        out.append(f"SELinux: {where}.seLinuxOptions.type")
    return out


def _seccomp_baseline(where: str, sc: Mapping[str, Any]) -> list[str]:
    if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
        return [f"Seccomp: {where}.seccompProfile.type Unconfined"]
    return []


def restricted_violations(pod: Mapping[str, Any]) -> list[str]:
    """The controls of the restricted profile (baseline included) ``pod`` breaks."""
    spec = pod.get("spec") or {}
    out = baseline_violations(pod)
    for i, volume in enumerate(spec.get("volumes") or []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"Volume Types: spec.volumes[{i}] {sorted(kinds - RESTRICTED_VOLUMES)}")
    psc = spec.get("securityContext") or {}
    pod_non_root = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
    if psc.get("runAsUser") == 0:
        out.append("Running as Non-root user: spec.securityContext.runAsUser 0")
    for where, c in _containers(spec):
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"Privilege Escalation: {where}.securityContext.allowPrivilegeEscalation must be false")
        if sc.get("runAsNonRoot") is False or not (pod_non_root or sc.get("runAsNonRoot") is True):
            out.append(f"Running as Non-root: {where}.securityContext.runAsNonRoot must be true (here or pod-wide)")
        if sc.get("runAsUser") == 0:
            out.append(f"Running as Non-root user: {where}.securityContext.runAsUser 0")
        kind = (sc.get("seccompProfile") or {}).get("type")
        if not (kind in ("RuntimeDefault", "Localhost") or (kind is None and pod_seccomp)):
            out.append(f"Seccomp: {where}.securityContext.seccompProfile must be RuntimeDefault or Localhost")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"Capabilities: {where}.securityContext.capabilities.drop must include ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"Capabilities: {where}.securityContext.capabilities.add beyond NET_BIND_SERVICE")
    return out
