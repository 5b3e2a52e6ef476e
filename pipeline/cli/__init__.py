"""The command line: the shared kit (`kit`), the job's declarations (`declarations`), the checks that need no
environment (`checks`), the job's Beam options (`options`), and the generated flag table and Flex Template
file (`generated`). Standard library, Beam's option classes and `transforms.settings` only: `--help` and flag
errors are instant."""
