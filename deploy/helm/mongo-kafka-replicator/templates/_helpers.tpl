{{/* Name of one component's objects: <release>-<component>. */}}
{{- define "replicator.fullname" -}}
{{- printf "%s-%s" .root.Release.Name .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "replicator.selectorLabels" -}}
app.kubernetes.io/name: {{ .name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "replicator.labels" -}}
{{ include "replicator.selectorLabels" . }}
app.kubernetes.io/part-of: mongo-kafka-replicator
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{/*
Every object of one component. Arguments: root (the chart's context), name (cdc-source or
sink-writer), c (the component's values), envPrefix (CDC_SOURCE or SINK_WRITER), replicas,
strategy. Configuration comes from a ConfigMap (TOML), secrets only from Kubernetes Secrets
through the environment, so neither the ConfigMap nor the pod spec ever holds a password.
*/}}
{{- define "replicator.component" -}}
{{- $fullname := include "replicator.fullname" . -}}
{{- $c := .c -}}
{{- $root := .root -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "replicator.labels" . | nindent 4 }}
data:
  config.toml: |
    {{- $c.config | nindent 4 }}
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "replicator.labels" . | nindent 4 }}
  {{- with ($c.serviceAccount).annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "replicator.labels" . | nindent 4 }}
spec:
  replicas: {{ .replicas }}
  revisionHistoryLimit: 3
  strategy:
    type: {{ .strategy }}
  selector:
    matchLabels:
      {{- include "replicator.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "replicator.labels" . | nindent 8 }}
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $c.port | quote }}
        prometheus.io/path: /metrics
        checksum/config: {{ $c.config | sha256sum }}
        {{- with $c.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ $fullname }}
      terminationGracePeriodSeconds: {{ $c.terminationGracePeriodSeconds }}
      securityContext:
        {{- toYaml $root.Values.podSecurityContext | nindent 8 }}
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ .name }}
          image: "{{ $root.Values.image.registry }}{{ .name }}:{{ $root.Values.image.tag | default $root.Chart.AppVersion }}"
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: ["--config", "/etc/replicator/config.toml"]
          ports:
            - name: http
              containerPort: {{ $c.port }}
              protocol: TCP
          env:
            - name: {{ .envPrefix }}__HTTP__LISTEN_ADDR
              value: "0.0.0.0:{{ $c.port }}"
            - name: {{ .envPrefix }}__MONGO__URI
              valueFrom:
                secretKeyRef:
                  name: {{ $c.secrets.mongoUri.name }}
                  key: {{ $c.secrets.mongoUri.key }}
            {{- if $c.secrets.kafkaSasl.name }}
            - name: {{ .envPrefix }}__KAFKA__OPTIONS__SASL_USERNAME
              valueFrom:
                secretKeyRef:
                  name: {{ $c.secrets.kafkaSasl.name }}
                  key: {{ $c.secrets.kafkaSasl.usernameKey }}
            - name: {{ .envPrefix }}__KAFKA__OPTIONS__SASL_PASSWORD
              valueFrom:
                secretKeyRef:
                  name: {{ $c.secrets.kafkaSasl.name }}
                  key: {{ $c.secrets.kafkaSasl.passwordKey }}
            {{- end }}
            {{- with $c.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          livenessProbe:
            httpGet: {path: /health/livez, port: http}
            periodSeconds: 10
            timeoutSeconds: 3
            failureThreshold: 6
          readinessProbe:
            httpGet: {path: /health/readyz, port: http}
            periodSeconds: 5
            timeoutSeconds: 3
            failureThreshold: 3
          startupProbe:
            httpGet: {path: /health/livez, port: http}
            periodSeconds: 2
            failureThreshold: 30
          resources:
            {{- toYaml $c.resources | nindent 12 }}
          securityContext:
            {{- toYaml $root.Values.securityContext | nindent 12 }}
          volumeMounts:
            - name: config
              mountPath: /etc/replicator/config.toml
              subPath: config.toml
              readOnly: true
            {{- if $c.caBundle.configMap }}
            - name: ca
              mountPath: {{ $c.caBundle.mountPath }}
              readOnly: true
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ $fullname }}
        {{- if $c.caBundle.configMap }}
        - name: ca
          configMap:
            name: {{ $c.caBundle.configMap }}
            items:
              - key: {{ $c.caBundle.key }}
                path: {{ $c.caBundle.key }}
        {{- end }}
      {{- with $c.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $c.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "replicator.labels" . | nindent 4 }}
spec:
  type: ClusterIP
  selector:
    {{- include "replicator.selectorLabels" . | nindent 4 }}
  ports:
    - name: http
      port: {{ $c.port }}
      targetPort: http
      protocol: TCP
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "replicator.labels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $c.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "replicator.selectorLabels" . | nindent 6 }}
{{- if $root.Values.serviceMonitor.enabled }}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ $fullname }}
  labels:
    {{- include "replicator.labels" . | nindent 4 }}
    {{- with $root.Values.serviceMonitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "replicator.selectorLabels" . | nindent 6 }}
  endpoints:
    - port: http
      path: /metrics
      interval: {{ $root.Values.serviceMonitor.interval }}
{{- end }}
{{- end -}}

{{/*
Replicas of one component kept apart: on different nodes (required, or preferred) and, when the
cluster has them, in different zones (preferred). Arguments: root, name, required (bool).
*/}}
{{- define "replicator.spreadAffinity" -}}
podAntiAffinity:
  {{- if .required }}
  requiredDuringSchedulingIgnoredDuringExecution:
    - topologyKey: kubernetes.io/hostname
      labelSelector:
        matchLabels:
          {{- include "replicator.selectorLabels" . | nindent 10 }}
  {{- end }}
  preferredDuringSchedulingIgnoredDuringExecution:
    {{- if not .required }}
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "replicator.selectorLabels" . | nindent 12 }}
    {{- end }}
    - weight: 50
      podAffinityTerm:
        topologyKey: topology.kubernetes.io/zone
        labelSelector:
          matchLabels:
            {{- include "replicator.selectorLabels" . | nindent 12 }}
{{- end -}}
