# Sample quality: one feature network per arena, trained on the data set's own training split as
# that arena presents it (no downloaded weights), and the anchors of each arena. Each model's own
# scores come from rule model.


rule feature_net:
    input:
        data=f"{RESULTS}/data/{config['dataset']}.json",
    output:
        net=f"{RESULTS}/quality/feature_net/{{arena}}.pt",
        facts=f"{RESULTS}/quality/feature_net/{{arena}}.json",
    log:
        f"{RESULTS}/logs/feature_net/{{arena}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/feature_net/{{arena}}.tsv"
    params:
        data=data_flags(),
        epochs=config["quality"]["feature_epochs"],
        seed=config["quality"]["feature_seed"],
    threads: 1
    resources:
        mem_mb=rule_resources("quality", "mem_mb"),
        runtime=rule_resources("quality", "runtime"),
        gpu=rule_resources("quality", "gpu"),
    shell:
        "vaestudy feature-net {params.data} --arena {wildcards.arena} --epochs {params.epochs} "
        "--seed {params.seed} --threads {threads} --out {output.net:q} --facts {output.facts:q} > {log:q} 2>&1"


rule anchors:
    input:
        net=rules.feature_net.output.net,
    output:
        f"{RESULTS}/quality/anchors/{{arena}}.json",
    log:
        f"{RESULTS}/logs/anchors/{{arena}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/anchors/{{arena}}.tsv"
    params:
        data=data_flags(),
        samples=samples_flag(),
        k=config["quality"]["k"],
        seed=config["quality"]["feature_seed"],
    threads: 1
    resources:
        mem_mb=rule_resources("quality", "mem_mb"),
        runtime=rule_resources("quality", "runtime"),
        gpu=rule_resources("quality", "gpu"),
    shell:
        "vaestudy anchors {params.data} --arena {wildcards.arena} --feature-net {input.net:q} "
        "{params.samples} --k {params.k} --seed {params.seed} --threads {threads} --out {output:q} > {log:q} 2>&1"
