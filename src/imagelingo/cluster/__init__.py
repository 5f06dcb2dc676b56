"""What knows about platforms: the supported Kubeflow releases (platforms), the KFP backends'
rules (kfp_rules), the deploy step's KServe objects and the training engines. Stages never import
this package."""
