#!/bin/bash
# gpujob boot script for run $run_id (string.Template; rendered by launcher/providers/gcp/selection.py).
# It pins SSH: sshd presents only this run's host key, whose public half the client already holds,
# so the first connection is verified instead of trusted on first use.
set -euo pipefail
# The guard (launcher/guard.py, templates/gpujob-guard.sh), started before anything that could fail:
# powers off once the job has ended and nobody fetched the results within limits.unfetched_grace,
# once the results are home and no client is attached, or when no client was attached for
# limits.idle_timeout while no job ran. This script runs at every boot, so a reboot restarts it.
# A guest power-off stops a Compute Engine VM (the VM has no credentials to delete itself):
# GPU, CPU and memory stop billing, the boot disk bills until teardown, `gpujob down` or `gpujob gc`.
$guard
umask 077
install -d -m 755 /etc/ssh/sshd_config.d
cat > /etc/ssh/gpujob_host_key <<'GPUJOB_HOST_KEY_END'
$host_key_private
GPUJOB_HOST_KEY_END
cat > /etc/ssh/gpujob_host_key.pub <<'GPUJOB_HOST_PUB_END'
$host_key_public
GPUJOB_HOST_PUB_END
chmod 600 /etc/ssh/gpujob_host_key
chmod 644 /etc/ssh/gpujob_host_key.pub
# Drop-ins are read before the distro's own HostKey lines, and any HostKey line turns the
# default keys off: sshd offers exactly the pinned key.
cat > /etc/ssh/sshd_config.d/00-gpujob.conf <<'GPUJOB_SSHD_END'
HostKey /etc/ssh/gpujob_host_key
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
ClientAliveInterval 15
ClientAliveCountMax 4
GPUJOB_SSHD_END
chmod 644 /etc/ssh/sshd_config.d/00-gpujob.conf
systemctl restart ssh 2>/dev/null || systemctl restart sshd
