# Load the data set once, before any training job: a missing or corrupt data set fails here.
rule prepare_data:
    output:
        f"{RESULTS}/data/{{dataset}}.json",
    log:
        f"{RESULTS}/logs/prepare_data/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/prepare_data/{{dataset}}.tsv"
    params:
        root=f"--data-root {shlex.quote(config['data_root'])}" if config["data_root"] else "",
        download="--download" if config["download"] else "",
        seed=config["data_seed"],
        val=config["train"]["val_fraction"],
        test=config["train"]["test_fraction"],
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "vaestudy prepare --dataset {wildcards.dataset} {params.root} {params.download} "
        "--data-seed {params.seed} --val-fraction {params.val} --test-fraction {params.test} "
        "--out {output:q} > {log:q} 2>&1"
