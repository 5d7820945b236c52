package main

// A minimal package schema: enough for `pulumi package get-schema` and for the
// engine to know the package name, version and which inputs are secret or
// replace the resource. Property names are those of the pulumi-command 1.2.1
// SDKs.
var schemaJSON = `{
  "name": "command",
  "version": "` + Version + `",
  "description": "Offline subset of the Pulumi Command provider (local.Command, local.run, remote.Command).",
  "types": {
    "command:remote:Connection": {
      "type": "object",
      "properties": {
        "host": {"type": "string"}, "port": {"type": "number", "default": 22},
        "user": {"type": "string", "default": "root"},
        "password": {"type": "string", "secret": true},
        "privateKey": {"type": "string", "secret": true},
        "privateKeyPassword": {"type": "string", "secret": true},
        "agentSocketPath": {"type": "string"},
        "dialErrorLimit": {"type": "integer", "default": 10},
        "perDialTimeout": {"type": "integer", "default": 15},
        "hostKey": {"type": "string"},
        "proxy": {"$ref": "#/types/command:remote:ProxyConnection"}
      },
      "required": ["host"]
    },
    "command:remote:ProxyConnection": {
      "type": "object",
      "properties": {
        "host": {"type": "string"}, "port": {"type": "number", "default": 22},
        "user": {"type": "string", "default": "root"},
        "password": {"type": "string", "secret": true},
        "privateKey": {"type": "string", "secret": true},
        "privateKeyPassword": {"type": "string", "secret": true},
        "agentSocketPath": {"type": "string"},
        "dialErrorLimit": {"type": "integer", "default": 10},
        "perDialTimeout": {"type": "integer", "default": 15},
        "hostKey": {"type": "string"}
      },
      "required": ["host"]
    },
    "command:common:Logging": {
      "type": "string",
      "enum": [{"value": "stdout"}, {"value": "stderr"}, {"value": "stdoutAndStderr"}, {"value": "none"}]
    }
  },
  "resources": {
    "command:local:Command": {
      "inputProperties": {
        "create": {"type": "string"}, "update": {"type": "string"}, "delete": {"type": "string"},
        "dir": {"type": "string"}, "stdin": {"type": "string"},
        "logging": {"$ref": "#/types/command:common:Logging"},
        "environment": {"type": "object", "additionalProperties": {"type": "string"}},
        "interpreter": {"type": "array", "items": {"type": "string"}},
        "triggers": {"type": "array", "items": {"$ref": "pulumi.json#/Any"}, "replaceOnChanges": true},
        "addPreviousOutputInEnv": {"type": "boolean"}
      },
      "properties": {
        "create": {"type": "string"}, "update": {"type": "string"}, "delete": {"type": "string"},
        "dir": {"type": "string"}, "stdin": {"type": "string"},
        "logging": {"$ref": "#/types/command:common:Logging"},
        "environment": {"type": "object", "additionalProperties": {"type": "string"}},
        "interpreter": {"type": "array", "items": {"type": "string"}},
        "triggers": {"type": "array", "items": {"$ref": "pulumi.json#/Any"}},
        "addPreviousOutputInEnv": {"type": "boolean"},
        "stdout": {"type": "string"}, "stderr": {"type": "string"}
      },
      "required": ["stdout", "stderr"]
    },
    "command:remote:Command": {
      "inputProperties": {
        "connection": {"$ref": "#/types/command:remote:Connection", "secret": true},
        "create": {"type": "string"}, "update": {"type": "string"}, "delete": {"type": "string"},
        "stdin": {"type": "string"},
        "logging": {"$ref": "#/types/command:common:Logging"},
        "environment": {"type": "object", "additionalProperties": {"type": "string"}},
        "triggers": {"type": "array", "items": {"$ref": "pulumi.json#/Any"}, "replaceOnChanges": true},
        "addPreviousOutputInEnv": {"type": "boolean"}
      },
      "requiredInputs": ["connection"],
      "properties": {
        "connection": {"$ref": "#/types/command:remote:Connection", "secret": true},
        "create": {"type": "string"}, "update": {"type": "string"}, "delete": {"type": "string"},
        "stdin": {"type": "string"},
        "logging": {"$ref": "#/types/command:common:Logging"},
        "environment": {"type": "object", "additionalProperties": {"type": "string"}},
        "triggers": {"type": "array", "items": {"$ref": "pulumi.json#/Any"}},
        "addPreviousOutputInEnv": {"type": "boolean"},
        "stdout": {"type": "string"}, "stderr": {"type": "string"}
      },
      "required": ["connection", "stdout", "stderr"]
    }
  },
  "functions": {
    "command:local:run": {
      "inputs": {
        "properties": {
          "command": {"type": "string"}, "dir": {"type": "string"}, "stdin": {"type": "string"},
          "logging": {"$ref": "#/types/command:common:Logging"},
          "environment": {"type": "object", "additionalProperties": {"type": "string"}},
          "interpreter": {"type": "array", "items": {"type": "string"}},
          "addPreviousOutputInEnv": {"type": "boolean"}
        },
        "required": ["command"]
      },
      "outputs": {
        "properties": {"command": {"type": "string"}, "stdout": {"type": "string"}, "stderr": {"type": "string"}},
        "required": ["command", "stdout", "stderr"]
      }
    }
  }
}`
