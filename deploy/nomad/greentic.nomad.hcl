# greentic-host on Nomad: three hosts behind the `greentic-host` service, tenants' secrets
# rendered from Vault into the file backend's layout, the bundle rendered into the task and
# reloaded (SIGHUP) when it changes, and canary deployments that revert on their own — the
# same shape as the host's own canaries.
#
#   nomad job run deploy/nomad/greentic.nomad.hcl
#
# Before running it: the image (`just image`, pushed to your registry), a Vault role
# `greentic-host` allowed to read kv/data/greentic/*, one Vault secret per tenant
# (kv/greentic/<tenant>, one key per secret name), and NATS JetStream for the fleet
# (nats.service.consul:4222 here). See deploy/nomad/README.md.

variable "image" {
  type        = string
  default     = "ghcr.io/greentic-ai/greentic:0.1.0"
  description = "The greentic image (scripts/image.sh builds it)."
}

variable "cloud" {
  type        = string
  default     = "local"
  description = "tenant-ctx.deployment.cloud: aws, gcp, azure, hetzner, local, …"
}

job "greentic-host" {
  type        = "service"
  datacenters = ["*"]

  # A new version starts one canary beside the running hosts; it must pass /readyz for
  # min_healthy_time before `nomad deployment promote` replaces the rest one at a time, and a
  # canary that does not get healthy within healthy_deadline is reverted to the last good job.
  update {
    max_parallel      = 1
    canary            = 1
    auto_promote      = false
    auto_revert       = true
    health_check      = "checks"
    min_healthy_time  = "15s"
    healthy_deadline  = "5m"
    progress_deadline = "10m"
    stagger           = "30s"
  }

  group "host" {
    count = 3

    # Spread hosts over machines.
    spread {
      attribute = "${node.unique.id}"
    }

    network {
      port "http" {
        to = 8080
      }
      port "admin" {
        to = 9464
      }
    }

    # The compiled components and their key survive a restart on the same machine.
    ephemeral_disk {
      size    = 2048
      sticky  = true
      migrate = true
    }

    # Calls reach a host only while /readyz says so: loaded, not draining, not saturated.
    service {
      name     = "greentic-host"
      port     = "http"
      provider = "consul"
      tags     = ["greentic", "http"]

      check {
        name     = "ready"
        type     = "http"
        port     = "admin"
        path     = "/readyz"
        interval = "5s"
        timeout  = "2s"
      }

      check {
        name     = "alive"
        type     = "http"
        port     = "admin"
        path     = "/healthz"
        interval = "10s"
        timeout  = "2s"

        check_restart {
          limit           = 3
          grace           = "5m"
          ignore_warnings = false
        }
      }
    }

    restart {
      attempts = 3
      interval = "5m"
      delay    = "5s"
      mode     = "delay"
    }

    task "greentic-host" {
      driver = "docker"

      # Longer than [host].shutdown_grace_secs below: in-flight calls finish on a stop.
      kill_timeout = "45s"
      kill_signal  = "SIGTERM"

      config {
        image = var.image
        ports = ["http", "admin"]
        args = [
          "run", "/local/bundle",
          "--listen", "0.0.0.0:8080",
          "--admin-listen", "0.0.0.0:9464",
        ]
        readonly_rootfs = true
        cap_drop        = ["ALL"]
        security_opt    = ["no-new-privileges"]
      }

      # Vault: the task's workload identity reads the tenants' secrets (role greentic-host).
      vault {
        role        = "greentic-host"
        change_mode = "noop"
      }

      env {
        # tenant-ctx.deployment: the platform is this one; the region is Nomad's ($NOMAD_REGION,
        # set by Nomad); the cloud is the job's variable.
        GREENTIC_PLATFORM = "nomad"
        GREENTIC_CLOUD    = var.cloud
        # The host's id in the fleet.
        HOSTNAME = "${NOMAD_ALLOC_ID}"
        GREENTIC_LOG_FORMAT = "json"
      }

      # The bundle. A change (a new job version, or a Consul key it reads) re-renders it and
      # SIGHUPs the host, which applies the new revision without failing a call — or refuses
      # it whole and keeps serving the old one.
      template {
        destination   = "local/bundle/greentic.toml"
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<-EOT
          [host]
          listen = "0.0.0.0:8080"
          admin_listen = "0.0.0.0:9464"
          cache_dir = "/alloc/data/compiled"
          cache_key_file = "/alloc/data/cache.key"
          shutdown_grace_secs = 35

          [auth]
          algorithm = "ES256"
          issuer = "https://issuer.example.com"
          audience = "greentic-host"
          public_key_file = "jwt.pub"

          [secrets]
          # Rendered from Vault by the templates below: /secrets/tenants/<tenant>/<NAME>.
          backend = "file"
          dir = "/secrets/tenants"

          [state]
          type = "nats"
          url = "nats://nats.service.consul:4222"

          [trust.keys]
          providers = "providers.pub"

          [providers.telegram]
          source = "registry.example.com/greentic/messaging-telegram:1.0.0"
          grants = { secrets = ["TELEGRAM_BOT_TOKEN"], outbound_hosts = ["api.telegram.org"] }

          [tenants.acme]
          secrets = ["TELEGRAM_BOT_TOKEN"]

          [tenants.globex]
          secrets = ["TELEGRAM_BOT_TOKEN"]

          [[routes]]
          tenant = "*"
          capability = "send"
          provider = "telegram"
        EOT
      }

      # The public keys the bundle names (placeholders: replace with yours).
      template {
        destination = "local/bundle/jwt.pub"
        change_mode = "noop"
        data        = "{{ key \"greentic/keys/jwt.pub\" }}"
      }

      template {
        destination = "local/bundle/providers.pub"
        change_mode = "noop"
        data        = "{{ key \"greentic/keys/providers.pub\" }}"
      }

      # Tenants' secrets, one file per tenant and name, in the task's secrets directory
      # (in memory, readable by this task alone). The file backend reads a secret on every call,
      # so a value rotated in Vault reaches calls once re-rendered, without a signal.
      template {
        destination = "secrets/tenants/acme/TELEGRAM_BOT_TOKEN"
        perms       = "0400"
        change_mode = "noop"
        data        = "{{ with secret \"kv/data/greentic/acme\" }}{{ .Data.data.TELEGRAM_BOT_TOKEN }}{{ end }}"
      }

      template {
        destination = "secrets/tenants/globex/TELEGRAM_BOT_TOKEN"
        perms       = "0400"
        change_mode = "noop"
        data        = "{{ with secret \"kv/data/greentic/globex\" }}{{ .Data.data.TELEGRAM_BOT_TOKEN }}{{ end }}"
      }

      resources {
        cpu        = 2000
        memory     = 1024
        memory_max = 2048
      }
    }
  }
}
