{{- /*
Both scrape endpoints of a ServiceMonitor or PodMonitor. The alerts and the
dashboard select job="kube2redis", whatever the release is called: set it here.
*/}}
{{- define "kube2redis.scrapeEndpoints" -}}
{{- $interval := .interval }}
{{- range list "watcher-http" "projector-http" }}
- port: {{ . }}
  path: /metrics
  interval: {{ $interval }}
  relabelings:
    - targetLabel: job
      replacement: kube2redis
{{- end }}
{{- end }}
